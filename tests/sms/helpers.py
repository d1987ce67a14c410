"""Helpers of the SMS tests: cases through the API, database peeks, moving the SMS clock."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update

from core.db import utcnow
from core.models import OutboxJob, OutboxStatus
from sms.models import SmsSend
from tests.conftest import Api
from tests.core.test_intake_flow import dept, new_draft

BEIJING = ZoneInfo("Asia/Shanghai")
PHONE = "+8613812345678"


def rows(api: Api, stmt: Any) -> list[Any]:
    """Run a select in the app's database and return the scalars."""

    async def _q() -> list[Any]:
        async with api.ctx.sessions() as session:
            return list(await session.scalars(stmt))

    return list(api.run(_q))


def one(api: Api, stmt: Any) -> Any:
    """Return the single scalar of a select."""
    found = rows(api, stmt)
    assert len(found) == 1, found
    return found[0]


def sends(api: Api) -> list[SmsSend]:
    """Every SMS send, oldest first."""
    return rows(api, select(SmsSend).order_by(SmsSend.id))


def accepted_case(api: Api, *, phone: str = "138 1234 5678", urgent: bool = False, text: str | None = None) -> str:
    """Create a draft, file it and let the workflow number it; return the case number."""
    extra: dict[str, Any] = {"reporter": {"name": "王先生", "phone": phone}}
    if text:
        extra["text"] = text
    draft = new_draft(api, **extra)
    response = api.post(f"/api/drafts/{draft['id']}/accept", json={"case_type_code": "01002", "urgent": urgent})
    assert response.status_code == 200, response.text
    api.drain()
    number = api.get(f"/api/drafts/{draft['id']}").json()["case_number"]
    assert number
    return str(number)


def close_case(api: Api, number: str) -> None:
    """Walk a case to 结案 through the department API."""
    dept(api, number, "dispatch", note="派遣", department="drainage")
    dept(api, number, "handle")
    dept(api, number, "feedback", note="已处理")
    dept(api, number, "verify", passed=True, note="核查通过")
    api.drain()


def beijing(hour: int, minute: int = 0, *, days: int = 0) -> dt.datetime:
    """Today (Beijing) at hour:minute, in UTC."""
    today = utcnow().astimezone(BEIJING).date() + dt.timedelta(days=days)
    return dt.datetime.combine(today, dt.time(hour, minute), BEIJING).astimezone(dt.UTC)


def set_clock(api: Api, when: dt.datetime) -> None:
    """Make the SMS service believe it is `when` (quiet hours, rate limits, in-flight windows)."""
    api.ctx.sms.clock = lambda: when


def make_due(api: Api) -> int:
    """Let time pass for the outbox: every pending job becomes due now."""

    async def _q() -> int:
        async with api.ctx.sessions() as session, session.begin():
            result = await session.execute(update(OutboxJob).where(OutboxJob.status == OutboxStatus.PENDING)
                                           .values(next_attempt_at=utcnow()))
            return int(result.rowcount)  # type: ignore[attr-defined]

    return int(api.run(_q))


def jobs(api: Api, kind: str | None = None) -> list[OutboxJob]:
    """Outbox jobs (of one kind), oldest first."""
    stmt = select(OutboxJob).order_by(OutboxJob.id)
    if kind:
        stmt = stmt.where(OutboxJob.kind == kind)
    return rows(api, stmt)


def drain_all(api: Api, rounds: int = 20) -> None:
    """Drain, making retried jobs due again, until nothing is pending."""
    for _ in range(rounds):
        api.drain()
        if not any(j.status == OutboxStatus.PENDING for j in jobs(api)):
            return
        make_due(api)
    raise AssertionError("outbox still has pending jobs")
