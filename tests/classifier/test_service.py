"""Suggestions from the shipped model: ranked, calibrated, with 大类, department and place; bad input is safe."""

from __future__ import annotations

import asyncio

import pytest

from classifier.service import MAX_CHARS, Classifier


def test_suggestions_are_sorted_probabilities(shipped: Classifier) -> None:
    result = shipped.suggest("解放路与人民路交叉口东北角一个污水井盖塌了，晚上很危险")
    scores = [s.score for s in result.suggestions]
    assert len(result.suggestions) == 5 and scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert result.suggestions[0].code == "01002" and result.suggestions[0].name == "污水井盖异常"
    assert result.major == "01" and result.major_name == "市政公用设施类"
    assert result.major_score is not None and result.major_score >= result.suggestions[0].score - 1e-6
    assert result.department == "drainage"
    assert result.address is not None and result.address.text.startswith("解放路与人民路交叉口")
    assert result.district == "中心区"
    assert result.needs_review is False and result.reason is None
    assert result.model_id == shipped.model_id


def test_department_follows_the_district(shipped: Classifier) -> None:
    # 占道经营 is routed to the district's 城管执法大队: from the text's place, or from the caller.
    from_text = shipped.suggest("示例市第一中学东门对面有人占道摆摊卖水果")
    assert from_text.suggestions[0].code == "09006"
    assert from_text.address is not None and from_text.address.lat == pytest.approx(30.624)
    assert from_text.department == "zx_zfdd"
    by_caller = shipped.suggest("人行道上摆满了小吃摊，走路都要挤着过", district="江北区")
    assert by_caller.department == "jb_zfdd" and by_caller.district == "江北区"
    by_code = shipped.suggest("人行道上摆满了小吃摊，走路都要挤着过", district="990104")
    assert by_code.department == "dc_zfdd"


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty text"),
    ("   \n\t ", "empty text"),
    ("😀😀😡🙏", "no Chinese text to classify"),
    ("The manhole cover outside my house is missing", "no Chinese text to classify"),
    ("1234567890", "no Chinese text to classify"),
])
def test_unusable_text_gets_an_empty_answer(shipped: Classifier, text: str, reason: str) -> None:
    result = shipped.suggest(text)
    assert result.suggestions == [] and result.needs_review and result.reason == reason


def test_long_and_odd_text_still_answers(shipped: Classifier) -> None:
    long = shipped.suggest("楼下垃圾桶满了溢出来" * 1000)
    assert len(long.suggestions) >= 3 and long.needs_review and str(MAX_CHARS) in (long.reason or "")
    huge = shipped.suggest("井盖丢了" * 2_500_000)  # 10 million characters
    assert huge.suggestions and huge.needs_review
    padded = shipped.suggest(" " * 20_000 + "路灯不亮")
    assert padded.suggestions[0].code == "01037"
    vague = shipped.suggest("好")
    assert len(vague.suggestions) >= 3 and vague.needs_review and "low confidence" in (vague.reason or "")
    mixed = shipped.suggest("井盖没了😡😡 help!!! \x00\u200b")
    assert mixed.suggestions and mixed.suggestions[0].code.startswith("01")


def test_not_a_string_is_a_clear_error(shipped: Classifier) -> None:
    with pytest.raises(TypeError):
        shipped.suggest(None)  # type: ignore[arg-type]


def test_k_is_clamped(shipped: Classifier) -> None:
    assert len(shipped.suggest("路灯不亮", k=1).suggestions) == 3
    assert len(shipped.suggest("路灯不亮", k=10_000).suggestions) == len(shipped.model.classes)


def test_batch_matches_single(shipped: Classifier) -> None:
    texts = ["路灯不亮", "", "共享单车堆成山", "渣土车没盖篷布一路掉土"]
    batch = shipped.batch(texts)
    assert [r.to_dict() for r in batch] == [shipped.suggest(t).to_dict() for t in texts]


def test_async_runs_off_the_loop(shipped: Classifier) -> None:
    async def go() -> str:
        result = await shipped.suggest_async("共享单车堆成山把地铁口堵了")
        return result.suggestions[0].code

    assert asyncio.run(go()) == "09011"


def test_threshold_controls_review(shipped: Classifier) -> None:
    strict = Classifier(model=shipped.model, taxonomy=shipped.taxonomy, routing=shipped.routing,
                        gazetteer=shipped.gazetteer, review_threshold=1.0)
    assert strict.suggest("共享单车堆成山把地铁口堵了").needs_review


def test_unknown_codes_of_a_city_taxonomy_are_skipped(shipped: Classifier) -> None:
    from kb.service import Taxonomy

    small = Taxonomy(types={c: t for c, t in shipped.taxonomy.types.items() if c != "09011"})
    city = Classifier(model=shipped.model, taxonomy=small, routing=shipped.routing, gazetteer=shipped.gazetteer)
    result = city.suggest("共享单车堆成山把地铁口堵了")
    assert "09011" not in [s.code for s in result.suggestions] and len(result.suggestions) == 5
