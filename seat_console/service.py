"""Queries behind the console pages: inbox, case search and detail, dashboard figures."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.cases.models import (
    OPEN_DRAFT_STATUSES,
    STEP_LABELS,
    Case,
    CaseState,
    DraftCase,
    DraftStatus,
    Notification,
    Rating,
)
from core.cases.service import citizen_phone
from core.context import AppContext
from core.db import utcnow
from core.models import Channel, CitizenContact, ContactKind, Message, Operator
from core.phone import InvalidPhone, mask_phone, normalise_phone
from kb.service import LOCAL_TZ, KnowledgeBase

log = logging.getLogger(__name__)

CLAIM_DEADLINE = dt.timedelta(minutes=3)  # 签收 within 3 minutes, as the centre's standard asks
CHANNEL_LABELS = {
    Channel.HOTLINE: "热线", Channel.VOICEMAIL: "留言", Channel.WECHAT: "微信", Channel.SMS: "短信",
    Channel.API: "开放接口", Channel.TRANSFER_12345: "12345转办", Channel.ALARM: "设备告警", Channel.SEAT: "坐席",
}
DRAFT_STATUS_LABELS = {
    DraftStatus.DRAFT: "草稿", DraftStatus.PENDING_REVIEW: "待受理", DraftStatus.ACCEPTED: "已立案",
    DraftStatus.REJECTED: "不予立案", DraftStatus.MERGED: "已合并", DraftStatus.ANSWERED: "已答复",
}
CASE_STATE_LABELS = {CaseState.SUBMITTING: "提交中", CaseState.OPEN: "办理中", CaseState.CLOSED: "已结案",
                     CaseState.REJECTED: "已退回"}
REJECT_REASONS = (
    "不属于城市管理职责范围",
    "信息不全，无法核实位置",
    "重复反映，已有案件办理中",
    "现场核实问题不存在",
    "属于私人纠纷，建议通过其他途径解决",
    "涉及违法犯罪，请拨打110",
)


@dataclass(frozen=True, slots=True)
class InboxRow:
    """One line of the 待受理 inbox."""

    id: int
    number: str
    channel: str
    text: str
    created_at: dt.datetime
    claim_due: dt.datetime
    overdue: bool
    claimed_by: str | None
    mine: bool


def local(value: dt.datetime | None) -> str:
    """Format a UTC time in the centre's time zone."""
    return value.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M") if value else ""


async def inbox(*, session: AsyncSession, operator: Operator, limit: int = 200) -> list[InboxRow]:
    """Open drafts, oldest first, with their 签收 deadline and who holds them."""
    now = utcnow()
    rows = await session.execute(
        select(DraftCase, Operator.display_name)
        .outerjoin(Operator, Operator.id == DraftCase.claimed_by)
        .where(DraftCase.status.in_(OPEN_DRAFT_STATUSES))
        .order_by(DraftCase.created_at, DraftCase.id)
        .limit(limit)
    )
    result = []
    for draft, claimer in rows.all():
        due = draft.created_at + CLAIM_DEADLINE
        result.append(InboxRow(
            id=draft.id, number=draft.number, channel=CHANNEL_LABELS.get(draft.channel, draft.channel.value),
            text=draft.raw_text[:80], created_at=draft.created_at, claim_due=due,
            overdue=draft.claimed_by is None and now > due, claimed_by=claimer,
            mine=draft.claimed_by == operator.id,
        ))
    return result


async def suggest(ctx: AppContext, text: str, district: str | None) -> dict[str, Any] | None:
    """Ask the classifier for suggestions off the event loop; None when no model is available."""
    classifier = ctx.classifier
    if classifier is None or not text.strip():
        return None
    try:
        if hasattr(classifier, "suggest_async"):
            raw = await classifier.suggest_async(text, district=district)
        else:
            raw = await asyncio.to_thread(classifier.suggest, text, district=district)
    except Exception as err:  # noqa: BLE001 - a missing suggestion must never break the form
        log.warning("classifier unavailable for the console: %s", err)
        return None
    data: dict[str, Any] = raw if isinstance(raw, dict) else getattr(raw, "to_dict", lambda: {})()
    return data or None


async def history_for(*, session: AsyncSession, citizen_id: int | None, exclude_draft: int | None = None
                      ) -> list[dict[str, Any]]:
    """The citizen's earlier drafts and cases, newest first."""
    if citizen_id is None:
        return []
    rows = await session.execute(
        select(DraftCase, Case.number, Case.step)
        .outerjoin(Case, Case.draft_id == DraftCase.id)
        .where(DraftCase.citizen_id == citizen_id, DraftCase.id != (exclude_draft or 0))
        .order_by(DraftCase.created_at.desc())
        .limit(10)
    )
    return [
        {"number": number or draft.number, "text": draft.raw_text[:40], "at": local(draft.created_at),
         "status": STEP_LABELS[step] if step else DRAFT_STATUS_LABELS[draft.status], "is_case": bool(number)}
        for draft, number, step in rows.all()
    ]


async def search_cases(
    *, session: AsyncSession, kb: KnowledgeBase, q: str | None = None, phone: str | None = None,
    case_type: str | None = None, state: str | None = None, date_from: dt.date | None = None,
    date_to: dt.date | None = None, limit: int = 50,
) -> list[dict[str, Any]]:
    """Find cases by number, place or text, the reporter's phone, type, state and date."""
    stmt = select(Case)
    if q:
        like = f"%{q.strip()[:100]}%"
        stmt = stmt.where(or_(Case.number == q.strip(), Case.address.ilike(like), Case.description.ilike(like)))
    if phone:
        try:
            e164 = normalise_phone(phone)
        except InvalidPhone:
            return []
        owners = select(CitizenContact.citizen_id).where(CitizenContact.kind == ContactKind.PHONE,
                                                         CitizenContact.value == e164)
        stmt = stmt.where(Case.citizen_id.in_(owners))
    if case_type:
        stmt = stmt.where(Case.case_type_code == case_type)
    if state:
        stmt = stmt.where(Case.state == state)
    if date_from:
        stmt = stmt.where(Case.created_at >= dt.datetime.combine(date_from, dt.time(), LOCAL_TZ))
    if date_to:
        stmt = stmt.where(Case.created_at < dt.datetime.combine(date_to + dt.timedelta(days=1), dt.time(), LOCAL_TZ))
    cases = await session.scalars(stmt.order_by(Case.created_at.desc()).limit(limit))
    result = []
    for case in cases:
        case_type_obj = kb.taxonomy.get(case.case_type_code)
        result.append({
            "number": case.number, "type": case_type_obj.name if case_type_obj else case.case_type_code,
            "step": STEP_LABELS[case.step], "state": CASE_STATE_LABELS[case.state], "address": case.address or "",
            "department": kb.routing.department_name(case.department) or "", "created": local(case.created_at),
            "overdue": bool(case.deadline_at and case.state != CaseState.CLOSED and case.deadline_at < utcnow()),
        })
    return result


async def case_detail(*, session: AsyncSession, kb: KnowledgeBase, case: Case) -> dict[str, Any]:
    """Everything about one case for its detail page."""
    draft = await session.get(DraftCase, case.draft_id)
    notices = list(await session.scalars(
        select(Notification).where(Notification.case_id == case.id).order_by(Notification.id)))
    rating = await session.scalar(select(Rating).where(Rating.case_id == case.id))
    messages = list(await session.scalars(
        select(Message).where(Message.case_id == case.id).order_by(Message.id).limit(100)))
    calls: list[Any] = []
    try:
        from hotline.models import Call

        calls = list(await session.scalars(select(Call).where(
            or_(Call.case_id == case.id, Call.draft_id == case.draft_id)).order_by(Call.started_at)))
    except ImportError:
        calls = []
    case_type = kb.taxonomy.get(case.case_type_code)
    return {
        "case": case,
        "type_name": case_type.name if case_type else case.case_type_code,
        "major_name": case_type.major_name if case_type else "",
        "department": kb.routing.department_name(case.department),
        "draft": draft,
        "media": list(draft.media) if draft else [],
        "phone_masked": mask_phone(citizen_phone(draft.citizen)) if draft else "",
        "timeline": [{"step": STEP_LABELS[e.step], "at": local(e.at), "actor": e.actor or "", "note": e.note or "",
                      "attachments": list(e.attachments)} for e in sorted(case.events, key=lambda e: (e.at, e.id))],
        "notices": [{"template": n.template, "channel": CHANNEL_LABELS.get(n.channel, n.channel.value),
                     "status": n.status.value, "body": n.body or "", "at": local(n.sent_at or n.created_at)}
                    for n in notices],
        "rating": rating,
        "messages": messages,
        "calls": calls,
        "deadline": local(case.deadline_at),
        "state": CASE_STATE_LABELS[case.state],
        "step": STEP_LABELS[case.step],
    }


def _today_start() -> dt.datetime:
    now = utcnow().astimezone(LOCAL_TZ)
    return now.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(dt.UTC)


async def dashboard(*, session: AsyncSession, kb: KnowledgeBase, ctx: AppContext | None = None) -> dict[str, Any]:
    """Today's figures for the wallboard: intake by channel, outcomes, TOP10 types, hourly trend, queues."""
    start = _today_start()
    by_channel: dict[str, dict[str, int]] = {}
    rows = await session.execute(
        select(DraftCase.channel, DraftCase.status, func.count())
        .where(DraftCase.created_at >= start).group_by(DraftCase.channel, DraftCase.status))
    totals = {"received": 0, "accepted": 0, "rejected": 0, "pending": 0, "other": 0}
    for channel, status, n in rows.all():
        label = CHANNEL_LABELS.get(channel, str(channel))
        entry = by_channel.setdefault(label, {"received": 0, "accepted": 0, "rejected": 0})
        entry["received"] += n
        totals["received"] += n
        if status == DraftStatus.ACCEPTED:
            entry["accepted"] += n
            totals["accepted"] += n
        elif status == DraftStatus.REJECTED:
            entry["rejected"] += n
            totals["rejected"] += n
        elif status in OPEN_DRAFT_STATUSES:
            totals["pending"] += n
        else:
            totals["other"] += n
    top = await session.execute(
        select(Case.case_type_code, func.count().label("n")).where(Case.created_at >= start)
        .group_by(Case.case_type_code).order_by(func.count().desc()).limit(10))
    top10 = []
    for code, n in top.all():
        case_type = kb.taxonomy.get(code)
        top10.append({"code": code, "name": case_type.name if case_type else code, "count": n})
    created = await session.scalars(select(DraftCase.created_at).where(DraftCase.created_at >= start))
    hourly = [0] * 24
    for ts in created:
        hourly[ts.astimezone(LOCAL_TZ).hour] += 1
    overdue = await session.scalar(select(func.count()).select_from(Case).where(
        Case.state == CaseState.OPEN, Case.deadline_at < utcnow()))
    queues: list[dict[str, Any]] = []
    hotline = ctx.hotline if ctx else None
    if hotline is not None and hasattr(hotline, "wallboard"):
        try:
            board = await hotline.wallboard()
            queues = list(board if isinstance(board, list) else board.get("queues", []))
        except Exception as err:  # noqa: BLE001 - the wallboard shows what it can
            log.warning("queue figures unavailable: %s", err)
    return {"totals": totals, "by_channel": by_channel, "top10": top10, "hourly": hourly,
            "overdue": overdue or 0, "queues": queues, "generated": local(utcnow())}
