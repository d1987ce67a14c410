"""Bad input gets a clear 4xx with a stable error id, and nothing half-written stays behind."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from core.cases.models import DraftCase
from core.models import Citizen, CitizenContact, Counter
from tests.conftest import Api


def _counts(api: Api) -> tuple[int, int, int, int]:
    async def _q() -> tuple[int, int, int, int]:
        async with api.ctx.sessions() as session:
            return tuple([  # type: ignore[return-value]
                int(await session.scalar(select(func.count()).select_from(t)) or 0)
                for t in (DraftCase, Citizen, CitizenContact, Counter)
            ])

    result: tuple[int, int, int, int] = api.run(_q)
    return result


def _error(response: Any, status: int, error_id: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"]["id"] == error_id
    assert body["error"]["message"]
    return body


def test_malformed_json(api: Api) -> None:
    before = _counts(api)
    response = api.post("/api/drafts", content=b'{"text": "abc",', headers={"Content-Type": "application/json"})
    _error(response, 400, "malformed-json")
    assert _counts(api) == before


def test_unknown_case_type_leaves_nothing(api: Api) -> None:
    before = _counts(api)
    response = api.post("/api/drafts", json={"text": "井盖坏了", "suggested_type_code": "99999",
                                             "reporter": {"phone": "13812345678"}})
    _error(response, 422, "unknown-case-type")
    # The citizen would have been created before the type check: the transaction must roll it back.
    assert _counts(api) == before


def test_unknown_case_type_on_accept(api: Api) -> None:
    draft = api.post("/api/drafts", json={"text": "井盖坏了"}).json()
    response = api.post(f"/api/drafts/{draft['id']}/accept", json={"case_type_code": "99999"})
    _error(response, 422, "unknown-case-type")
    assert api.get(f"/api/drafts/{draft['id']}").json()["status"] == "pending_review"
    bad_format = api.post(f"/api/drafts/{draft['id']}/accept", json={"case_type_code": "abc"})
    _error(bad_format, 422, "invalid-request")


def test_oversized_text(api: Api) -> None:
    before = _counts(api)
    response = api.post("/api/drafts", json={"text": "垃圾" * 2001})
    body = _error(response, 422, "invalid-request")
    assert body["error"]["details"][0]["loc"][-1] == "text"
    assert _counts(api) == before


def test_body_too_large(api: Api) -> None:
    response = api.post("/api/drafts", content=b"x" * 2_000_001, headers={"Content-Type": "application/json"})
    _error(response, 413, "body-too-large")


def test_invalid_phone_leaves_nothing(api: Api) -> None:
    before = _counts(api)
    response = api.post("/api/drafts", json={"text": "井盖坏了", "reporter": {"phone": "12345"}})
    body = _error(response, 422, "invalid-phone")
    assert "12345" not in str(body["error"].get("details", {})).replace("*", "")
    assert _counts(api) == before


def test_unknown_fields_and_bad_coordinates(api: Api) -> None:
    _error(api.post("/api/drafts", json={"text": "x", "admin": True}), 422, "invalid-request")
    _error(api.post("/api/drafts", json={"text": "x", "location": {"lat": 123, "lng": 0}}), 422, "invalid-request")
    _error(api.post("/api/drafts", json={"text": "   "}), 422, "invalid-request")


def test_unknown_draft_and_case(api: Api) -> None:
    _error(api.get("/api/drafts/999999"), 404, "draft-not-found")
    _error(api.get("/api/cases/NOPE"), 404, "case-not-found")
