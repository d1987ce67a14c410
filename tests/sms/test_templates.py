"""Notice texts: signature first, one 70-character segment with realistic values, variables for the gateways."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb.service import KnowledgeBase
from sms.client import MULTI_PART_CHARS, SINGLE_PART_CHARS, id_aliases, segments, strip_astral
from sms.templates import SmsTemplates, UnknownTemplate

SIGNATURE = "示例城管"


@pytest.fixture(scope="module")
def templates() -> SmsTemplates:
    return SmsTemplates.load(signature=SIGNATURE)


def test_segments_count_the_signature_and_the_udh() -> None:
    assert segments("字" * SINGLE_PART_CHARS) == 1
    assert segments("字" * (SINGLE_PART_CHARS + 1)) == 2
    assert segments("字" * (2 * MULTI_PART_CHARS)) == 2
    assert segments("字" * (2 * MULTI_PART_CHARS + 1)) == 3


def test_every_notice_fits_one_segment_with_the_longest_real_values(templates: SmsTemplates) -> None:
    kb = KnowledgeBase.load()
    longest_type = max((t.name for t in kb.taxonomy.types.values()), key=len)
    longest_department = max((str(d.get("name")) for d in kb.routing.departments.values()), key=len)
    params = {"case_number": "2611220001234", "case_type": longest_type, "department": longest_department,
              "deadline": "11月23日17:00", "step": "结案", "note": "已处理"}
    for name in ("accepted", "dispatched", "closed", "rated", "opted_out"):
        text = templates.render(name, params)
        assert text.startswith(f"【{SIGNATURE}】"), text
        assert segments(text) == 1, (name, len(text), text)
        assert "王" not in text and "138" not in text  # no personal data in notices


def test_survey_offers_the_three_answers_and_the_opt_out(templates: SmsTemplates) -> None:
    text = templates.render("closed", {"case_number": "2611220001234"})
    assert "1满意" in text and "2基本满意" in text and "3不满意" in text and "回T退订" in text


def test_variables_in_order_of_appearance_for_template_gateways(templates: SmsTemplates) -> None:
    assert templates.variables("accepted") == ["case_type", "case_number"]
    assert templates.variables("dispatched") == ["case_number", "department", "deadline"]
    params = templates.provider_params("dispatched", {"case_number": "A1", "department": "部" * 50, "deadline": None})
    assert list(params) == ["case_number", "department", "deadline"]
    assert params["deadline"] == "" and len(params["department"]) == 35 and params["department"].endswith("…")


def test_unknown_template_and_broken_file(templates: SmsTemplates, tmp_path: Path) -> None:
    with pytest.raises(UnknownTemplate):
        templates.render("nope", {})
    broken = tmp_path / "t.yaml"
    broken.write_text('accepted: "{{ case_number "\n', encoding="utf-8")
    with pytest.raises(ValueError, match="syntax"):
        SmsTemplates.load(signature=SIGNATURE, path=broken)


def test_emoji_are_stripped_for_ucs2(templates: SmsTemplates) -> None:
    assert strip_astral("好😀的") == "好的"
    assert "😀" not in templates.render("text", {"content": "收到😀"})


def test_message_id_spellings() -> None:
    assert set(id_aliases("704643073")) >= {"2a000001", "2A000001"}
    assert "704643073" in id_aliases("2A000001")
