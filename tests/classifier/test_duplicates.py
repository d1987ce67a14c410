"""Duplicate candidates: text similarity gated by distance, shared place and time window."""

from __future__ import annotations

import datetime as dt

import pytest

from classifier.duplicates import Candidate, DuplicateRules, find_duplicates, haversine_m, text_similarities

NOW = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)


def test_haversine() -> None:
    assert haversine_m(30.0, 114.0, 30.0, 114.0) == 0.0
    # One thousandth of a degree of latitude is about 111 m.
    assert haversine_m(30.000, 114.0, 30.001, 114.0) == pytest.approx(111.2, abs=0.5)


def test_similarity_orders_texts() -> None:
    sims = text_similarities("人民路井盖丢了", ["人民路的井盖丢了很危险", "公园里有人烧烤", ""])
    assert sims[0] > 0.5 > sims[1] and sims[2] == 0.0


def test_ranked_by_text_distance_and_type() -> None:
    candidates = [
        Candidate("near-same", "路边污水井盖丢了一个洞", lat=30.6001, lng=114.3001, created_at=NOW, code="01002"),
        Candidate("near-other", "有人在这里摆摊卖水果", lat=30.6002, lng=114.3000, created_at=NOW, code="09006"),
        Candidate("far-same", "路边污水井盖丢了一个洞", lat=30.6100, lng=114.3000, created_at=NOW, code="01002"),
        Candidate("old-same", "路边污水井盖丢了一个洞", lat=30.6000, lng=114.3000,
                  created_at=NOW - dt.timedelta(days=30), code="01002"),
        Candidate("near-similar", "污水井盖不见了", lat=30.6003, lng=114.3002, created_at=NOW, code="01002"),
    ]
    found = find_duplicates("污水井盖丢了，路边一个大洞", candidates, lat=30.6000, lng=114.3000,
                            created_at=NOW + dt.timedelta(hours=3), code="01002")
    assert [m.id for m in found] == ["near-same", "near-similar"]
    best = found[0]
    assert best.distance_m is not None and best.distance_m < 20
    assert any("相距" in r for r in best.reasons) and any("文本相似度" in r for r in best.reasons)
    assert any("同一类型" in r for r in best.reasons) and any("3 小时" in r for r in best.reasons)


def test_same_place_without_coordinates() -> None:
    candidates = [
        Candidate("same-road", "人民路上有个井盖丢了", address="中心区人民路"),
        Candidate("other-road", "建设路上有个井盖丢了", address="江北区建设路"),
        Candidate("no-place", "井盖丢了"),
    ]
    found = find_duplicates("人民路的井盖不见了", candidates)
    ids = [m.id for m in found]
    assert ids[0] == "same-road" and "other-road" not in ids
    assert found[0].same_place == "人民路" and any("同一地点" in r for r in found[0].reasons)


def test_rules_are_configurable() -> None:
    candidate = Candidate("c1", "路灯不亮", lat=30.6, lng=114.3, created_at=NOW - dt.timedelta(days=2))
    kwargs = {"lat": 30.6015, "lng": 114.3, "created_at": NOW}
    assert find_duplicates("路灯一直不亮", [candidate], **kwargs) == []  # ~167 m away
    wide = DuplicateRules(radius_m=300, window=dt.timedelta(days=3))
    assert [m.id for m in find_duplicates("路灯一直不亮", [candidate], rules=wide, **kwargs)] == ["c1"]
    short = DuplicateRules(radius_m=300, window=dt.timedelta(days=1))
    assert find_duplicates("路灯一直不亮", [candidate], rules=short, **kwargs) == []


def test_naive_times_and_empty_input() -> None:
    naive = Candidate("c1", "垃圾桶满了", created_at=dt.datetime(2026, 11, 20, 8, 0))
    assert [m.id for m in find_duplicates("垃圾桶满了溢出来", [naive], created_at=NOW)] == ["c1"]
    assert find_duplicates("", [naive]) == [] and find_duplicates("垃圾桶满了", []) == []
    limited = find_duplicates("垃圾桶满了", [Candidate(str(i), "垃圾桶满了") for i in range(9)],
                              rules=DuplicateRules(limit=3))
    assert [m.id for m in limited] == ["0", "1", "2"]
