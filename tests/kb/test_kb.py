"""The knowledge base: shipped data is complete, search finds the right answers, a city can extend types."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb.search import KnowledgeIndex, load_articles
from kb.service import DATA_DIR, KnowledgeBase, Routing, Taxonomy
from tests.conftest import Api


@pytest.fixture(scope="module")
def index() -> KnowledgeIndex:
    return KnowledgeIndex.load()


def test_at_least_sixty_articles_with_unique_ids() -> None:
    articles = load_articles()
    assert len(articles) >= 60
    assert len({a.id for a in articles}) == len(articles)
    assert all(len(a.answer) >= 40 and a.questions for a in articles)


@pytest.mark.parametrize(("question", "expected_word"), [
    ("微信上怎么举报", "微信"),
    ("晚上工地施工太吵了", "施工"),
    ("小区下水道堵了找谁", "下水道"),
    ("遛狗要不要拴绳", "犬"),
    ("渣土车要办什么证", "渣土"),
    ("12319和12345有什么区别", "12345"),
    ("共享单车乱停谁管", "共享单车"),
])
def test_search_finds_the_topic(index: KnowledgeIndex, question: str, expected_word: str) -> None:
    hits = index.search(question, limit=3)
    assert hits, question
    assert any(expected_word in (h.article.title + h.article.answer) for h in hits[:2]), [h.article.title for h in hits]


def test_nonsense_and_empty_queries_return_nothing(index: KnowledgeIndex) -> None:
    assert index.search("") == []
    assert index.search("😀😀😀") == []
    assert index.search("x" * 10_000) == []


def test_city_data_is_complete() -> None:
    kb = KnowledgeBase.load()
    assert len(kb.taxonomy.types) == 250 and len(kb.taxonomy.majors) == 10
    routing = Routing.load()
    assert len(routing.departments) >= 40 and len(routing.district_codes) >= 6
    standards = (DATA_DIR / "city" / "standards.yaml").read_text(encoding="utf-8")
    assert standards.count("- code:") == 250
    manhole = kb.taxonomy.get("01001")
    assert manhole is not None and kb.limits.limit_for(manhole).label == "6工作时"


def test_city_can_extend_the_taxonomy(tmp_path: Path) -> None:
    extra = tmp_path / "extra.tsv"
    extra.write_text("code\tmajor_code\tmajor_name\tname\tgroup\n21001\t21\t扩展事件类\t飞线充电\t事件\n",
                     encoding="utf-8")
    taxonomy = Taxonomy.load(extra=extra)
    assert len(taxonomy.types) == 251 and taxonomy.get("21001").name == "飞线充电"  # type: ignore[union-attr]


def test_kb_api(api: Api) -> None:
    types = api.get("/api/kb/case-types").json()
    assert len(types) == 250 and types[0]["time_limit"]
    hits = api.get("/api/kb/search", params={"q": "怎么查询案件进度"}).json()
    assert hits and "案件" in hits[0]["title"]
