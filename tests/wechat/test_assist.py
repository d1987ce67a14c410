"""The optional classifier adapter and the consultation search, without the app."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kb.service import KnowledgeBase
from wechat import assist

schemas = pytest.importorskip("classifier.schemas")


class Holder:
    """Shaped like classifier.wiring's holder: suggest(text, district=, k=) -> ClassifyResult."""

    def __init__(self, result: Any = None, error: Exception | None = None) -> None:
        self.result, self.error, self.calls = result, error, 0

    def suggest(self, text: str, *, district: str | None = None, k: int = 5) -> Any:
        self.calls += 1
        if self.error:
            raise self.error
        return self.result


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase.load()


def test_classifier_results_are_read(kb: KnowledgeBase) -> None:
    result = schemas.ClassifyResult(
        suggestions=[schemas.Suggestion(code="06010", name="暴露垃圾", score=0.93),
                     schemas.Suggestion(code="06042", name="垃圾站（箱）满溢", score=0.04)],
        department="hwc", needs_review=False)
    suggest = assist.load_suggester(kb, Holder(result))
    assert suggest is not None
    got = asyncio.run(suggest("路边垃圾堆了好几天"))
    assert got == assist.Suggestion(code="06010", name="暴露垃圾", score=0.93, department="hwc", confident=True)
    doubtful = asyncio.run(assist.load_suggester(kb, Holder(result.model_copy(update={"needs_review": True})))("x"))  # type: ignore[misc]
    assert doubtful is not None and not doubtful.confident


def test_an_unready_or_broken_classifier_gives_no_suggestion(kb: KnowledgeBase) -> None:
    holder = Holder(error=RuntimeError("the classifier model is still loading"))
    suggest = assist.load_suggester(kb, holder)
    assert suggest is not None
    assert asyncio.run(suggest("井盖坏了")) is None and asyncio.run(suggest("井盖坏了")) is None
    assert holder.calls == 2  # tried again each time: the model may have finished loading meanwhile
    unknown = asyncio.run(assist.load_suggester(kb, Holder(schemas.ClassifyResult(
        suggestions=[schemas.Suggestion(code="99999", name="?", score=0.9)])))("x"))  # type: ignore[misc]
    assert unknown is None  # a code outside the taxonomy is no suggestion


def test_consultation_search_answers_only_on_topic() -> None:
    answers = assist.search_answers("门前五包是什么", min_score=12.0)
    assert answers.best is not None and "门前" in answers.best.title
    chat = assist.search_answers("今天天气怎么样", min_score=12.0)
    assert chat.best is None
    assert assist.search_answers("", min_score=12.0).best is None
