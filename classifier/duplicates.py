"""Possible duplicates of a new report among open drafts and cases: similar text, same place, same days."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from sklearn.feature_extraction.text import TfidfVectorizer

from classifier.address import Gazetteer, extract_address
from classifier.corpus import load_corpus
from classifier.text import normalise

EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True, slots=True)
class Candidate:
    """An open draft or case the new report might repeat."""

    id: str
    text: str
    lat: float | None = None
    lng: float | None = None
    address: str | None = None
    created_at: dt.datetime | None = None
    code: str | None = None


@dataclass(frozen=True, slots=True)
class DuplicateMatch:
    """A ranked candidate with the reasons an operator sees."""

    id: str
    score: float
    similarity: float
    distance_m: float | None
    same_place: str | None
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DuplicateRules:
    """Thresholds; r = 100 m suits point facilities, widen it for area events (vending, noise)."""

    min_similarity: float = 0.5
    # With a shared place or a short distance, a weaker text match is still worth showing.
    min_similarity_near: float = 0.25
    radius_m: float = 100.0
    window: dt.timedelta = dt.timedelta(days=7)
    limit: int = 5


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@lru_cache(maxsize=1)
def corpus_vectorizer() -> TfidfVectorizer:
    """Char 1-2-gram TF-IDF with document frequencies of the shipped corpus (fitted once per process).

    Corpus IDF keeps "了" or "路" from making unrelated reports look alike; fitting on the handful of
    candidates instead would make the weights depend on who else happens to be open.
    """
    texts = [normalise(e.text) for e in load_corpus()]
    return TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True).fit(texts)


def text_similarities(text: str, others: Sequence[str], *, vectorizer: TfidfVectorizer | None = None) -> list[float]:
    """Cosine of char TF-IDF vectors between the text and each other text."""
    if not others:
        return []
    vec = vectorizer or corpus_vectorizer()
    vectors = vec.transform([normalise(t) for t in (text, *others)])
    sims = (vectors[1:] @ vectors[0].T).toarray().ravel()
    return [float(s) for s in sims]


def place_keys(text: str | None, *, gazetteer: Gazetteer | None = None) -> set[str]:
    """Names of roads, compounds and landmarks in a text, plus its extracted place phrase."""
    if not text:
        return set()
    gaz = gazetteer or Gazetteer.load()
    keys = {place.name for _, _, place in gaz.find(text) if place.kind in ("road", "community", "landmark")}
    found = extract_address(text, gazetteer=gaz)
    if found is not None:
        keys.add(found.text)
    return keys


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def find_duplicates(text: str, candidates: Sequence[Candidate], *, lat: float | None = None,
                    lng: float | None = None, address: str | None = None, created_at: dt.datetime | None = None,
                    code: str | None = None, rules: DuplicateRules = DuplicateRules(),
                    gazetteer: Gazetteer | None = None,
                    vectorizer: TfidfVectorizer | None = None) -> list[DuplicateMatch]:
    """Rank the candidates that look like the same problem at the same place and time, with reasons."""
    if not candidates or not text.strip():
        return []
    gaz = gazetteer or Gazetteer.load()
    sims = text_similarities(text, [c.text for c in candidates], vectorizer=vectorizer)
    mine = place_keys(address, gazetteer=gaz) | place_keys(text, gazetteer=gaz)
    matches: list[DuplicateMatch] = []
    for candidate, sim in zip(candidates, sims, strict=True):
        reasons: list[str] = []
        if created_at is not None and candidate.created_at is not None:
            gap = abs(_aware(created_at) - _aware(candidate.created_at))
            if gap > rules.window:
                continue
            reasons.append(f"时间相隔 {_gap_label(gap)}")
        distance = None
        near = False
        if None not in (lat, lng, candidate.lat, candidate.lng):
            distance = haversine_m(lat, lng, candidate.lat, candidate.lng)  # type: ignore[arg-type]
            if distance > rules.radius_m:
                continue  # both located and too far apart: a different spot, whatever the text says
            near = True
            reasons.append(f"相距 {distance:.0f} 米")
        shared = None
        if distance is None:
            theirs = place_keys(candidate.address, gazetteer=gaz) | place_keys(candidate.text, gazetteer=gaz)
            common = sorted(mine & theirs, key=len, reverse=True)
            if common:
                shared = common[0]
                near = True
                reasons.append(f"同一地点：{shared}")
            elif mine and theirs:
                continue  # both name a place and the places differ
        threshold = rules.min_similarity_near if near else rules.min_similarity
        if sim < threshold:
            continue
        reasons.insert(0, f"文本相似度 {sim:.2f}")
        same_type = code is not None and candidate.code == code
        if same_type:
            reasons.append(f"同一类型 {code}")
        score = sim + (0.3 if near else 0.0) + (0.1 if same_type else 0.0)
        matches.append(DuplicateMatch(candidate.id, round(score, 4), round(sim, 4),
                                      round(distance, 1) if distance is not None else None, shared, tuple(reasons)))
    matches.sort(key=lambda m: (-m.score, m.id))
    return matches[: rules.limit]


def _gap_label(gap: dt.timedelta) -> str:
    hours = gap.total_seconds() / 3600
    if hours < 1:
        return f"{max(1, round(hours * 60))} 分钟"
    if hours < 48:
        return f"{hours:.0f} 小时"
    return f"{hours / 24:.0f} 天"
