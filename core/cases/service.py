"""Intake operations: create drafts, accept/reject/merge them, follow the workflow, rate cases."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import record
from core.cases.models import (
    CITIZEN_VISIBLE_STEPS,
    OPEN_DRAFT_STATUSES,
    STEP_LABELS,
    Case,
    CaseEvent,
    CaseState,
    DraftCase,
    DraftStatus,
    PointsEntry,
    Rating,
    Step,
)
from core.cases.notices import NoticeRequest, NoticeRouter
from core.cases.schemas import AcceptDraft, DraftCreate
from core.context import emit
from core.db import utcnow
from core.errors import Conflict, InvalidInput, NotFound
from core.models import Channel, Citizen, CitizenContact, ContactKind, Counter, Operator
from core.outbox import enqueue
from core.phone import mask_phone, normalise_phone
from core.workflow.ports import Receipt, StatusUpdate
from kb.service import LOCAL_TZ, KnowledgeBase

log = logging.getLogger(__name__)

POINTS_PER_VALID_REPORT = 10
# Outbox job kind: an accepted draft's text and type, for the classifier to learn from.
LABEL_KIND = "classifier.label"


class UnknownCaseType(InvalidInput):
    """The case-type code is not in the taxonomy."""

    error_id = "unknown-case-type"
    message = "案件类型不存在"


async def next_counter(*, session: AsyncSession, name: str) -> int:
    """Atomically increment a named counter and return the new value."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(Counter).values(name=name, value=1)
    stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={"value": Counter.value + 1})
    value = await session.scalar(stmt.returning(Counter.value))
    assert value is not None
    return int(value)


async def next_daily_number(*, session: AsyncSession, prefix: str, width: int, now: dt.datetime | None = None) -> str:
    """Return a short number like 2611220007: local date plus a per-day sequence."""
    day = (now or utcnow()).astimezone(LOCAL_TZ)
    stamp = day.strftime("%y%m%d") if width <= 4 else day.strftime("%Y%m%d")
    seq = await next_counter(session=session, name=f"{prefix}:{stamp}")
    return f"{stamp}{seq:0{width}d}"


async def find_citizen(*, session: AsyncSession, kind: ContactKind, value: str) -> Citizen | None:
    """Return the citizen owning a phone or openid."""
    contact = await session.scalar(
        select(CitizenContact).where(CitizenContact.kind == kind, CitizenContact.value == value)
    )
    return await session.get(Citizen, contact.citizen_id) if contact else None


async def get_or_create_citizen(
    *,
    session: AsyncSession,
    phone: str | None = None,
    openid: str | None = None,
    name: str | None = None,
) -> Citizen | None:
    """Find the citizen by phone (E.164) or openid, creating one and linking the other contact."""
    citizen: Citizen | None = None
    keys = [(kind, value) for kind, value in ((ContactKind.PHONE, phone), (ContactKind.WECHAT, openid)) if value]
    # Each contact is looked up once: the owner of the first one found is the citizen, and only contacts
    # nobody owns are linked to them (one owned by another citizen stays theirs).
    owners: dict[ContactKind, Citizen | None] = {}
    for kind, value in keys:
        owners[kind] = await find_citizen(session=session, kind=kind, value=value)
        citizen = citizen or owners[kind]
    if citizen is None:
        if not keys:
            return None
        citizen = Citizen(display_name=name, contacts=[])
        session.add(citizen)
    elif name and not citizen.display_name:
        citizen.display_name = name
    for kind, value in keys:
        if owners[kind] is None:
            citizen.contacts.append(CitizenContact(kind=kind, value=value))
    await session.flush()
    return citizen


def citizen_phone(citizen: Citizen | None) -> str | None:
    """Return the citizen's first phone number."""
    if citizen is None:
        return None
    return next((c.value for c in citizen.contacts if c.kind == ContactKind.PHONE), None)


async def create_draft(*, session: AsyncSession, data: DraftCreate, kb: KnowledgeBase, region: str = "CN") -> DraftCase:
    """Store a new report as a draft; the same `source_key` returns the first draft, never a second."""
    if data.source_key:
        existing = await session.scalar(select(DraftCase).where(DraftCase.source_key == data.source_key))
        if existing is not None:
            return existing
    if data.suggested_type_code and kb.taxonomy.get(data.suggested_type_code) is None:
        raise UnknownCaseType(details={"code": data.suggested_type_code})
    reporter = data.reporter
    phone = normalise_phone(reporter.phone, region=region) if reporter and reporter.phone else None
    citizen = await get_or_create_citizen(
        session=session, phone=phone, openid=reporter.openid if reporter else None,
        name=reporter.name if reporter else None,
    )
    location = data.location
    draft = DraftCase(
        number=await next_daily_number(session=session, prefix="draft", width=4),
        channel=data.channel,
        status=DraftStatus.PENDING_REVIEW,
        source_key=data.source_key,
        raw_text=data.text,
        media=[m.model_dump() for m in data.media],
        lat=location.lat if location else None,
        lng=location.lng if location else None,
        address=location.address if location else None,
        district=location.district if location else None,
        citizen_id=citizen.id if citizen else None,
        reporter_name=reporter.name if reporter else None,
        suggested_type_code=data.suggested_type_code,
        suggested_department=data.suggested_department,
        suggestion_confidence=data.suggestion_confidence,
        citizen=citizen,
    )
    try:
        # The draft is added inside the savepoint so that losing a race expunges it with the rollback.
        async with session.begin_nested():
            session.add(draft)
            await session.flush()
    except IntegrityError:
        # Two deliveries of the same report raced; the other one won and is the draft.
        if draft in session:
            session.expunge(draft)
        with session.no_autoflush:
            winner = await session.scalar(select(DraftCase).where(DraftCase.source_key == data.source_key))
        if winner is None:
            raise
        return winner
    emit(session, "draft.created", {"draft_id": draft.id, "number": draft.number, "channel": draft.channel.value})
    log.info("draft %s created from %s (reporter %s)", draft.number, draft.channel, mask_phone(phone))
    return draft


async def get_draft(*, session: AsyncSession, draft_id: int, lock: bool = False) -> DraftCase:
    """Return a draft or raise NotFound."""
    stmt = select(DraftCase).where(DraftCase.id == draft_id)
    if lock:
        stmt = stmt.with_for_update()
    draft = await session.scalar(stmt)
    if draft is None:
        raise NotFound("草稿不存在", error_id="draft-not-found")
    return draft


async def get_case(*, session: AsyncSession, case_id: int | None = None, number: str | None = None) -> Case:
    """Return a case by id or workflow number, or raise NotFound."""
    stmt = select(Case)
    stmt = stmt.where(Case.id == case_id) if case_id is not None else stmt.where(Case.number == number)
    case = await session.scalar(stmt)
    if case is None:
        raise NotFound("案件不存在", error_id="case-not-found")
    return case


async def accept_draft(
    *,
    session: AsyncSession,
    kb: KnowledgeBase,
    draft_id: int,
    data: AcceptDraft,
    operator: Operator | None,
) -> Case:
    """File the case (立案): create it, queue its hand-off to the workflow, close the draft."""
    draft = await get_draft(session=session, draft_id=draft_id, lock=True)
    if draft.status == DraftStatus.ACCEPTED:
        return await get_case_for_draft(session=session, draft=draft)
    _ensure_open(draft)
    if operator is not None and draft.claimed_by not in (None, operator.id):
        raise Conflict("该草稿正由其他受理员处理", error_id="draft-claimed")
    case_type = kb.taxonomy.get(data.case_type_code)
    if case_type is None:
        raise UnknownCaseType(details={"code": data.case_type_code})
    location = data.location
    district = (location.district if location else None) or draft.district
    department = data.department or kb.routing.department_for(case_type, district=district)
    case = Case(
        draft_id=draft.id,
        submit_key=f"draft-{draft.id}",
        case_type_code=case_type.code,
        major_code=case_type.major_code,
        department=department,
        urgent=data.urgent,
        description=data.description or draft.raw_text,
        address=(location.address if location else None) or draft.address,
        district=district,
        lat=(location.lat if location else None) or draft.lat,
        lng=(location.lng if location else None) or draft.lng,
        channel=draft.channel,
        citizen_id=draft.citizen_id,
        accepted_by=operator.id if operator else None,
    )
    session.add(case)
    await session.flush()
    session.add(CaseEvent(case_id=case.id, event_key="intake:collect", step=Step.COLLECT, at=draft.created_at,
                          actor=draft.channel.value, note="信息采集"))
    draft.status = DraftStatus.ACCEPTED
    draft.handled_by = operator.id if operator else None
    draft.claimed_by = None
    await enqueue(
        session=session,
        kind="workflow.submit",
        payload={"case_id": case.id},
        idempotency_key=f"submit:{case.submit_key}",
        ordering_key=f"case:{case.id}",
    )
    # The accepted type is the operator's label for this text: the classifier learns from it.
    await enqueue(session=session, kind=LABEL_KIND, payload={"draft_id": draft.id},
                  idempotency_key=f"label:draft-{draft.id}")
    if draft.citizen_id:
        await award_points(session=session, citizen_id=draft.citizen_id, case_id=case.id, delta=POINTS_PER_VALID_REPORT,
                           reason="valid_report")
    await record(session=session, operator=operator, action="draft.accept", target_type="draft",
                 target_id=str(draft.id), details={"case_type": case_type.code, "department": department})
    emit(session, "draft.accepted", {"draft_id": draft.id, "number": draft.number, "case_id": case.id})
    return case


async def get_case_for_draft(*, session: AsyncSession, draft: DraftCase) -> Case:
    """Return the case a draft was accepted into."""
    case = await session.scalar(select(Case).where(Case.draft_id == draft.id))
    if case is None:
        raise NotFound("案件不存在", error_id="case-not-found")
    return case


def _ensure_open(draft: DraftCase) -> None:
    if draft.status not in OPEN_DRAFT_STATUSES:
        raise Conflict("该草稿已处理", error_id="draft-closed", details={"status": draft.status.value})


async def _close_draft(
    *, session: AsyncSession, draft: DraftCase, status: DraftStatus, operator: Operator | None,
    details: dict[str, Any],
) -> DraftCase:
    """Close a draft without a case: record who did it, release the claim, tell the consoles."""
    draft.status = status
    draft.handled_by = operator.id if operator else None
    draft.claimed_by = None
    await record(session=session, operator=operator, action=f"draft.{status.value}", target_type="draft",
                 target_id=str(draft.id), details=details)
    emit(session, "draft.closed", {"draft_id": draft.id, "number": draft.number, "status": status.value})
    return draft


async def reject_draft(*, session: AsyncSession, draft_id: int, reason: str, operator: Operator | None) -> DraftCase:
    """不予立案: close the draft with a reason the citizen can be told."""
    draft = await get_draft(session=session, draft_id=draft_id, lock=True)
    if draft.status == DraftStatus.REJECTED:
        return draft
    _ensure_open(draft)
    draft.reject_reason = reason
    return await _close_draft(session=session, draft=draft, status=DraftStatus.REJECTED, operator=operator,
                              details={"reason": reason})


async def merge_draft(*, session: AsyncSession, draft_id: int, case_number: str, operator: Operator | None) -> DraftCase:
    """Mark a draft as a duplicate of an existing case."""
    draft = await get_draft(session=session, draft_id=draft_id, lock=True)
    case = await get_case(session=session, number=case_number)
    if draft.status == DraftStatus.MERGED and draft.merged_into_case_id == case.id:
        return draft
    _ensure_open(draft)
    draft.merged_into_case_id = case.id
    return await _close_draft(session=session, draft=draft, status=DraftStatus.MERGED, operator=operator,
                              details={"case_number": case_number})


async def answer_draft(*, session: AsyncSession, draft_id: int, answer: str, operator: Operator | None) -> DraftCase:
    """Close a consultation answered on the spot (咨询 resolved)."""
    draft = await get_draft(session=session, draft_id=draft_id, lock=True)
    _ensure_open(draft)
    draft.reject_reason = answer[:255]
    return await _close_draft(session=session, draft=draft, status=DraftStatus.ANSWERED, operator=operator,
                              details={})


async def award_points(
    *, session: AsyncSession, citizen_id: int, case_id: int | None, delta: int, reason: str, note: str | None = None
) -> None:
    """Add a ledger line once per (citizen, reason, case)."""
    exists = await session.scalar(
        select(PointsEntry.id).where(
            PointsEntry.citizen_id == citizen_id, PointsEntry.reason == reason, PointsEntry.case_id == case_id
        )
    )
    if exists is None:
        session.add(PointsEntry(citizen_id=citizen_id, case_id=case_id, delta=delta, reason=reason, note=note))
        await session.flush()


def receipt_update(receipt: Receipt, *, submit_key: str) -> StatusUpdate:
    """Turn a submission receipt into the first status update of the case."""
    return StatusUpdate(
        case_number=receipt.case_number, seq=receipt.seq, step=receipt.step, at=receipt.at,
        submit_key=submit_key, department=receipt.department, deadline_at=receipt.deadline_at, note="立案",
        actor="workflow",
    )


async def apply_status_update(
    *, session: AsyncSession, update: StatusUpdate, kb: KnowledgeBase, notices: NoticeRouter
) -> Case:
    """Mirror a workflow step change: timeline, current step, notices; replays and reordering are harmless."""
    case = await session.scalar(select(Case).where(Case.number == update.case_number).with_for_update())
    if case is None and update.submit_key:
        case = await session.scalar(select(Case).where(Case.submit_key == update.submit_key).with_for_update())
    if case is None:
        raise NotFound("案件不存在", error_id="case-not-found", details={"case_number": update.case_number})
    if case.number is None:
        case.number = update.case_number
    if case.state == CaseState.SUBMITTING:
        case.state = CaseState.OPEN
    event_key = f"wf:{update.seq}"
    known = await session.scalar(
        select(CaseEvent.id).where(CaseEvent.case_id == case.id, CaseEvent.event_key == event_key)
    )
    if known is not None:
        return case
    session.add(CaseEvent(case_id=case.id, event_key=event_key, step=update.step, at=update.at, actor=update.actor,
                          note=update.note, attachments=list(update.attachments)))
    # An older update arriving late is recorded in the timeline but never moves the case backwards.
    if update.seq > case.last_event_seq:
        case.last_event_seq = update.seq
        case.step = update.step
        if update.department:
            case.department = update.department
        if update.deadline_at:
            case.deadline_at = update.deadline_at
        if update.step in (Step.CLOSE, Step.RATE):
            case.state = CaseState.CLOSED
            case.closed_at = case.closed_at or update.at
        elif case.state == CaseState.CLOSED:
            case.state = CaseState.OPEN  # reopened after a bad rating or a failed check
            case.closed_at = None
        if update.rating is not None:
            case.rating_score = update.rating
    await session.flush()
    template = CITIZEN_VISIBLE_STEPS.get(update.step)
    if template:
        case_type = kb.taxonomy.get(case.case_type_code)
        await notices.notify(
            session=session,
            request=NoticeRequest(
                case=case,
                template=template,
                step=update.step,
                params={
                    "case_number": case.number,
                    "case_type": case_type.name if case_type else case.case_type_code,
                    "step": STEP_LABELS[update.step],
                    "department": kb.routing.department_name(case.department),
                    "note": (update.note or "")[:60],
                    "deadline": case.deadline_at.astimezone(LOCAL_TZ).strftime("%m月%d日%H:%M")
                    if case.deadline_at else None,
                },
                key=f"case:{case.id}:{template}",
            ),
        )
    await notices.step_changed(session=session, case=case, step=update.step, seq=update.seq)
    emit(session, "case.step_changed", {"case_id": case.id, "number": case.number, "step": update.step.value,
                                         "step_label": STEP_LABELS[update.step]})
    return case


async def rate_case(
    *,
    session: AsyncSession,
    case: Case,
    score: int,
    channel: Channel,
    comment: str | None,
    operator: Operator | None = None,
) -> Rating:
    """Record the citizen's rating of a closed case and queue it for the workflow (once)."""
    existing = await session.scalar(select(Rating).where(Rating.case_id == case.id))
    if existing is not None:
        if existing.score == score:
            return existing
        raise Conflict("该案件已评价", error_id="already-rated")
    if case.step != Step.CLOSE:
        raise Conflict("案件尚未办结，暂不能评价", error_id="case-not-closed", details={"step": case.step.value})
    rating = Rating(case_id=case.id, citizen_id=case.citizen_id, score=score, channel=channel, comment=comment)
    session.add(rating)
    await session.flush()
    await enqueue(
        session=session,
        kind="workflow.rate",
        payload={"case_id": case.id, "rating_id": rating.id},
        idempotency_key=f"rate:{case.id}",
        ordering_key=f"case:{case.id}",
    )
    await record(session=session, operator=operator, action="case.rate", target_type="case",
                 target_id=str(case.id), details={"score": score, "channel": channel.value})
    return rating


def case_summary(case: Case, kb: KnowledgeBase) -> dict[str, Any]:
    """A compact, privacy-safe description of a case for live events and lists."""
    case_type = kb.taxonomy.get(case.case_type_code)
    return {
        "id": case.id,
        "number": case.number,
        "step": case.step.value,
        "step_label": STEP_LABELS[case.step],
        "case_type": case_type.name if case_type else case.case_type_code,
    }


CLAIM_MINUTES = 15


async def claim_draft(*, session: AsyncSession, draft_id: int, operator: Operator) -> DraftCase:
    """签收: give the draft to one operator; others see it as taken until release or claim expiry."""
    draft = await get_draft(session=session, draft_id=draft_id, lock=True)
    _ensure_open(draft)
    now = utcnow()
    expired = draft.claimed_at is None or now - draft.claimed_at > dt.timedelta(minutes=CLAIM_MINUTES)
    if draft.claimed_by not in (None, operator.id) and not expired:
        raise Conflict("该草稿正由其他受理员处理", error_id="draft-claimed")
    draft.claimed_by = operator.id
    draft.claimed_at = now
    emit(session, "draft.claimed", {"draft_id": draft.id, "number": draft.number, "by": operator.display_name})
    return draft


async def release_draft(*, session: AsyncSession, draft_id: int, operator: Operator) -> DraftCase:
    """Give a claimed draft back to the inbox."""
    draft = await get_draft(session=session, draft_id=draft_id, lock=True)
    if draft.claimed_by == operator.id:
        draft.claimed_by = None
        draft.claimed_at = None
        emit(session, "draft.released", {"draft_id": draft.id, "number": draft.number})
    return draft


async def autosave_draft(
    *, session: AsyncSession, draft_id: int, operator: Operator, form: dict[str, Any]
) -> DraftCase:
    """Keep what the operator has typed so a reload or a crash loses nothing."""
    draft = await get_draft(session=session, draft_id=draft_id, lock=True)
    _ensure_open(draft)
    if draft.claimed_by not in (None, operator.id):
        raise Conflict("该草稿正由其他受理员处理", error_id="draft-claimed")
    draft.form_state = form
    draft.form_saved_at = utcnow()
    return draft


async def reveal_phone(*, session: AsyncSession, draft_id: int, operator: Operator, ip: str | None) -> str | None:
    """Return the reporter's full number for a callback; every look is audited."""
    draft = await get_draft(session=session, draft_id=draft_id)
    phone = citizen_phone(draft.citizen)
    await record(session=session, operator=operator, action="phone.reveal", target_type="draft",
                 target_id=str(draft.id), details={"masked": mask_phone(phone)}, ip=ip)
    return phone
