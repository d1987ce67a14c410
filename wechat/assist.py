"""What the bot borrows from kb/ and classifier/: consultation answers, case-type suggestions, addresses.

Each is one small function the bot calls, run off the event loop, so any of them can be swapped or
missing without touching the conversation code. The classifier is optional: when `classifier.service`
cannot be imported (or its answer cannot be read) the bot simply shows no suggestion.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kb.service import KnowledgeBase

log = logging.getLogger(__name__)


# --- consultation answers (kb/search.py: jieba tokens + BM25) -------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """The best consultation article for a question."""

    id: str
    title: str
    answer: str
    handoff: str | None
    score: float


@dataclass(frozen=True, slots=True)
class Answers:
    """A confident answer, or titles of near misses."""

    best: Answer | None
    near: list[str]


_index_lock = threading.Lock()
_loaded: list[Any] = []


def _index() -> Any:
    """Load and index the shipped articles once per process (jieba's dictionary load takes ~1.5 s)."""
    if _loaded:
        return _loaded[0]
    with _index_lock:
        if not _loaded:
            from kb.search import KnowledgeIndex

            _loaded.append(KnowledgeIndex.load())
    return _loaded[0]


def warm_up() -> None:
    """Load the article index and the gazetteer (call in a thread at start-up)."""
    _index()
    try:
        from classifier.address import Gazetteer

        Gazetteer.load()
    except ImportError:
        pass


# Words that say nothing about the topic of a question ("今天天气怎么样" must not match an article on 今天).
GENERIC_WORDS = frozenset(
    "怎么样 什么 为什么 可以 需要 今天 明天 现在 有人 我家 附近 哪里 一下 你们 我们 他们 知道 问题 情况 办法 "
    "时候 东西 应该 这样 那样 怎么办 是否 多少 几点 我要 我想 请问 谢谢".split()
)


def _topic_words(question: str) -> list[str]:
    import jieba

    from kb.search import STOPWORDS

    words = (w.strip() for w in jieba.lcut(question.lower()))
    return [w for w in words if len(w) >= 2 and w not in STOPWORDS and w not in GENERIC_WORDS]


def _heading(article: Any) -> str:
    return " ".join([article.title, *article.questions, " ".join(article.keywords)])


def search_answers(question: str, *, min_score: float) -> Answers:
    """Answer a free question from the knowledge base; the swap point for another search engine."""
    hits = _index().search(question, limit=3)
    if not hits:
        return Answers(None, [])
    top = hits[0]
    second = hits[1].score if len(hits) > 1 else 0.0
    # A confident answer stands out: high enough, clearly ahead of the runner-up, and about something the
    # article's title, sample questions or keywords name (BM25 on bigrams alone matches chit-chat too).
    on_topic = any(word in _heading(top.article) for word in _topic_words(question))
    if top.score >= min_score and top.score >= 1.2 * second and on_topic:
        article = top.article
        return Answers(Answer(article.id, article.title, article.answer, article.handoff, top.score), [])
    return Answers(None, [h.article.title for h in hits if h.score >= min_score / 2][:3])


async def answer_question(question: str, *, min_score: float, wait_seconds: float = 2.0) -> Answers | None:
    """Search off the event loop; None while the index is still loading after `wait_seconds`."""
    task = asyncio.to_thread(search_answers, question, min_score=min_score)
    try:
        return await asyncio.wait_for(task, timeout=wait_seconds)
    except TimeoutError:
        return None


# --- case-type suggestions (classifier/service.py, optional) --------------------------------------


@dataclass(frozen=True, slots=True)
class Suggestion:
    """The classifier's best case type for a description."""

    code: str
    name: str
    score: float | None
    department: str | None
    confident: bool = True  # False when the classifier flags it for review: then the citizen is not shown it


Suggester = Callable[[str], Awaitable[Suggestion | None]]


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _normalise(result: Any, kb: KnowledgeBase) -> Suggestion | None:
    """Read the classifier's answer: a list of suggestions, or an object/dict with `suggestions`."""
    items = result if isinstance(result, list | tuple) else _field(result, "suggestions")
    top = items[0] if items else result
    code = _field(top, "code")
    if not isinstance(code, str) or kb.taxonomy.get(code) is None:
        return None
    score = _field(top, "score")
    whole = not isinstance(result, list | tuple)
    department = _field(result, "department") if whole else None
    review = _field(result, "needs_review") if whole else None
    return Suggestion(code=code, name=kb.taxonomy.types[code].name,
                      score=float(score) if isinstance(score, int | float) else None,
                      department=str(department)[:64] if department else None,
                      confident=not review if isinstance(review, bool) else True)


def load_suggester(kb: KnowledgeBase, service: Any = None) -> Suggester | None:
    """Return a suggester over `classifier.service` (or its wired service object), or None when absent."""
    target = service if service is not None and hasattr(service, "suggest") else None
    if target is None:
        try:
            target = importlib.import_module("classifier.service")
        except ImportError:
            log.info("classifier.service not available: WeChat reports get no suggested case type")
            return None
        except Exception as err:  # noqa: BLE001 - a broken optional module must not stop the bot
            log.warning("classifier.service failed to import (%s): no suggested case types", type(err).__name__)
            return None
    fn = next((getattr(target, n) for n in ("suggest", "classify", "predict") if callable(getattr(target, n, None))),
              None)
    if fn is None:
        log.warning("classifier.service has no suggest/classify/predict function: no suggested case types")
        return None
    broken: list[str] = []

    def _call(text: str) -> Any:
        try:
            return fn(text)
        except TypeError:
            return fn(text=text)

    async def suggest(text: str) -> Suggestion | None:
        try:
            result = await asyncio.to_thread(_call, text)
            if inspect.isawaitable(result):
                result = await result
            return _normalise(result, kb)
        except Exception as err:  # noqa: BLE001 - a suggestion is optional; the report goes on without one
            if not broken:
                log.warning("classifier suggestion failed (%s); continuing without", type(err).__name__)
            broken.append(type(err).__name__)
            return None

    return suggest


# --- typed addresses (classifier/address.py) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Place:
    """An address found in the citizen's text."""

    text: str
    district: str | None
    lat: float | None
    lng: float | None


def _extract(text: str) -> Place | None:
    try:
        from classifier.address import extract_address
    except ImportError:
        return None
    found = extract_address(text)
    if found is None:
        return None
    return Place(text=found.text, district=found.district, lat=found.lat, lng=found.lng)


async def resolve_address(text: str) -> Place | None:
    """Find the place phrase and its district in a typed address, off the event loop."""
    try:
        return await asyncio.to_thread(_extract, text)
    except Exception as err:  # noqa: BLE001 - address extraction is an aid; the typed text is kept anyway
        log.warning("address extraction failed: %s", type(err).__name__)
        return None
