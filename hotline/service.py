"""Hotline operations on the database: call records, screen pops, missed calls, seat log, 回访, wallboard figures."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import record
from core.cases.models import Case, CaseState, DraftCase, DraftStatus, Step
from core.cases.schemas import DraftCreate, MediaItem, Reporter
from core.cases.service import create_draft, find_citizen, rate_case
from core.db import utcnow
from core.errors import Conflict, InvalidInput, NotFound
from core.models import Channel, Citizen, CitizenContact, ContactKind, Operator
from core.phone import InvalidPhone, mask_phone, normalise_phone
from hotline.models import (
    MISSED_OUTCOMES,
    PAUSE_REASONS,
    Call,
    CallDirection,
    CallOutcome,
    CallPurpose,
    SeatEvent,
    SeatEventKind,
    SurveyCall,
    SurveyStatus,
)
from hotline.tracker import CallChange, CallState, Change, Purpose
from kb.service import LOCAL_TZ, KnowledgeBase

log = logging.getLogger(__name__)

MIN_MESSAGE_BYTES = 44 + 16_000  # WAV header + 1 s of 8 kHz 16-bit audio: shorter is a hang-up, not a message
SURVEY_SCORES = {"1": 5, "2": 3, "3": 1}  # 满意 / 基本满意 / 不满意 → the 1-5 rating scale
SURVEY_LABELS = {"1": "满意", "2": "基本满意", "3": "不满意"}
BAD_SCORE = 2  # a rating at or below this asks for a second, human callback


class UnknownPauseReason(InvalidInput):
    """示忙 needs one of the standard reasons."""

    error_id = "unknown-pause-reason"
    message = "示忙原因须为：小休、培训、整理"


def _ts(epoch: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(epoch, dt.UTC) if epoch else None


def caller_e164(raw: str, *, region: str = "CN") -> str | None:
    """Normalise a caller id to E.164, or None for withheld / invalid numbers."""
    if not raw or not any(ch.isdigit() for ch in raw):
        return None
    try:
        return normalise_phone(raw, region=region)
    except InvalidPhone:
        return None


def national_number(e164: str) -> str:
    """The digits to dial through a CN carrier: 13812345678 for mobiles, 0 + area code + number for landlines."""
    import phonenumbers

    parsed = phonenumbers.parse(e164, "CN")
    if parsed.country_code != 86:
        return "00" + e164.lstrip("+")
    national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    return "".join(ch for ch in national if ch.isdigit())


async def get_call(*, session: AsyncSession, call_id: int) -> Call:
    """Return a call or raise NotFound."""
    call = await session.get(Call, call_id)
    if call is None:
        raise NotFound("通话记录不存在", error_id="call-not-found")
    return call


async def operator_by_member(*, session: AsyncSession, member: str | None) -> Operator | None:
    """The queue MemberName is the operator's username."""
    if not member:
        return None
    return await session.scalar(select(Operator).where(Operator.username == member))


# --- call records ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Applied:
    """The call row after a change, and what the runtime should publish."""

    call: Call
    operator: Operator | None
    draft: DraftCase | None = None
    missed: bool = False
    callback_answered_for: int | None = None


async def _upsert(*, session: AsyncSession, state: CallState, region: str) -> Call:
    call = await session.scalar(select(Call).where(Call.linkedid == state.linkedid).with_for_update())
    if call is None:
        call = Call(linkedid=state.linkedid, started_at=_ts(state.started_at) or utcnow())
        call.direction = CallDirection.INBOUND if state.direction == "in" else CallDirection.OUTBOUND
        call.purpose = CallPurpose(state.purpose.value)
        call.outcome = CallOutcome.RINGING
        call.restored = state.restored
        call.job_id = state.job_id
        session.add(call)
    if call.caller is None and state.caller:
        call.caller = caller_e164(state.caller, region=region) or state.caller[:32]
        if call.citizen_id is None and call.caller.startswith("+"):
            citizen = await find_citizen(session=session, kind=ContactKind.PHONE, value=call.caller)
            call.citizen_id = citizen.id if citizen else None
    call.did = state.did or call.did
    call.queue = state.queue or call.queue
    call.job_id = call.job_id or state.job_id
    # Every change carries the whole call, so a change stored alone (the others coalesced) misses nothing.
    call.queued_at = call.queued_at or _ts(state.queued_at)
    call.ringing_at = call.ringing_at or _ts(state.ringing_at)
    if state.recording and not call.recording_path:
        call.recording_path = state.recording
    if call.outcome == CallOutcome.RINGING and state.queued_at:
        call.outcome = CallOutcome.QUEUED
    return call


async def apply_change(*, session: AsyncSession, change: CallChange, kb: KnowledgeBase, recordings_dir: Path | None,
                       region: str = "CN") -> Applied:
    """Store one change of a call (idempotent: replays and rebuilds only fill in what is missing)."""
    state = change.call
    call = await _upsert(session=session, state=state, region=region)
    operator: Operator | None = None
    draft: DraftCase | None = None
    if change.kind == Change.QUEUED:
        call.queued_at = call.queued_at or _ts(state.queued_at)
        if call.outcome == CallOutcome.RINGING:
            call.outcome = CallOutcome.QUEUED
    elif change.kind == Change.RINGING:
        call.ringing_at = call.ringing_at or _ts(state.ringing_at)
        operator = await operator_by_member(session=session, member=change.member)
        if call.purpose == CallPurpose.HOTLINE:
            draft = await ensure_call_draft(session=session, call=call, kb=kb, region=region)
    elif change.kind == Change.RING_STOPPED:
        operator = await operator_by_member(session=session, member=change.member)
    elif change.kind == Change.CONNECTED:
        call.answered_at = call.answered_at or _ts(state.answered_at)
        call.seat = state.seat or change.seat or call.seat
        operator = await operator_by_member(session=session, member=state.member)
        if operator is None and call.seat:
            operator = await session.scalar(select(Operator).where(Operator.extension == call.seat,
                                                                   Operator.active.is_(True)))
        if operator is not None:
            call.operator_id = operator.id
        call.outcome = CallOutcome.ANSWERED
        _fill_durations(call)
        if call.purpose == CallPurpose.HOTLINE and call.draft_id:
            draft = await session.get(DraftCase, call.draft_id)
            if draft is not None and operator is not None and draft.status in (DraftStatus.DRAFT,
                                                                               DraftStatus.PENDING_REVIEW):
                draft.claimed_by, draft.claimed_at = operator.id, utcnow()
    elif change.kind == Change.RECORDING:
        call.recording_path = state.recording
    elif change.kind == Change.VOICEMAIL:
        call.voicemail_path = state.voicemail
        call.voicemail_reason = state.voicemail_reason
    elif change.kind == Change.ENDED:
        return await _end(session=session, call=call, state=state, kb=kb, recordings_dir=recordings_dir,
                          region=region)
    if state.voicemail_reason and not call.voicemail_reason:
        call.voicemail_reason = state.voicemail_reason
    await session.flush()
    return Applied(call=call, operator=operator, draft=draft)


def _seconds(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    return round((b - a).total_seconds(), 3) if a and b else None


def _fill_durations(call: Call) -> None:
    call.wait_seconds = _seconds(call.queued_at or call.started_at, call.answered_at or call.ended_at)
    call.ring_seconds = _seconds(call.ringing_at, call.answered_at or call.ended_at)
    call.talk_seconds = _seconds(call.answered_at, call.ended_at) if call.answered_at else None


async def _end(*, session: AsyncSession, call: Call, state: CallState, kb: KnowledgeBase,
               recordings_dir: Path | None, region: str) -> Applied:
    already = call.ended_at is not None
    call.ended_at = call.ended_at or _ts(state.ended_at) or utcnow()
    call.hangup_cause = call.hangup_cause or (state.hangup_cause or "")[:64] or None
    call.voicemail_path = call.voicemail_path or state.voicemail
    call.voicemail_reason = call.voicemail_reason or state.voicemail_reason
    if state.recording and call.answered_at:
        call.recording_path = state.recording
    elif not call.answered_at:
        call.recording_path = None  # MixMonitor 'b' never ran: nothing was bridged
    if state.answered_at and not call.answered_at:
        call.answered_at = _ts(state.answered_at)
        call.seat = call.seat or state.seat
    _fill_durations(call)
    missed = False
    draft: DraftCase | None = None
    answered_for: int | None = None
    if call.purpose == CallPurpose.HOTLINE:
        message = _message_file(recordings_dir, call.voicemail_path)
        if call.answered_at:
            call.outcome = CallOutcome.ANSWERED
        elif call.voicemail_reason == "after_hours":
            call.outcome = CallOutcome.AFTER_HOURS
        elif message is not None:
            call.outcome = CallOutcome.VOICEMAIL
        else:
            call.outcome = CallOutcome.ABANDONED
        if message is None:
            call.voicemail_path = None
        else:
            draft = await voicemail_draft(session=session, call=call, kb=kb, region=region)
        missed = call.outcome in MISSED_OUTCOMES and not already
    elif call.purpose == CallPurpose.CALLBACK:
        call.outcome = CallOutcome.ANSWERED if call.answered_at else CallOutcome.NO_ANSWER
        if call.answered_at and call.callback_for_id and not already:
            answered_for = call.callback_for_id
            await mark_called_back(session=session, call_id=call.callback_for_id, operator_id=call.operator_id)
    else:
        call.outcome = CallOutcome.ANSWERED if call.answered_at else CallOutcome.NO_ANSWER
    await session.flush()
    operator = await session.get(Operator, call.operator_id) if call.operator_id else None
    return Applied(call=call, operator=operator, draft=draft, missed=missed, callback_answered_for=answered_for)


def _message_file(recordings_dir: Path | None, relative: str | None) -> Path | None:
    if not relative or recordings_dir is None:
        return None
    path = (recordings_dir / relative).resolve()
    if recordings_dir.resolve() not in path.parents:
        return None  # a path from the PBX must stay inside the recordings directory
    try:
        return path if path.stat().st_size >= MIN_MESSAGE_BYTES else None
    except OSError:
        return None


def recording_file(recordings_dir: Path | None, relative: str | None) -> Path | None:
    """The file of a call's recording or message, when it exists inside the recordings directory."""
    if not relative or recordings_dir is None:
        return None
    path = (recordings_dir / relative).resolve()
    if recordings_dir.resolve() not in path.parents or not path.is_file():
        return None
    return path


async def ensure_call_draft(*, session: AsyncSession, call: Call, kb: KnowledgeBase, region: str) -> DraftCase:
    """The prefilled draft of a ringing call (one per call), so the operator only types the complaint."""
    if call.draft_id:
        draft = await session.get(DraftCase, call.draft_id)
        if draft is not None:
            return draft
    phone = call.caller if call.caller and call.caller.startswith("+") else None
    data = DraftCreate(
        channel=Channel.HOTLINE,
        text=f"【{call.did or '热线'}来电】待受理员记录诉求。",
        source_key=f"call:{call.linkedid}",
        reporter=Reporter(phone=phone) if phone else None,
    )
    draft = await create_draft(session=session, data=data, kb=kb, region=region)
    call.draft_id = draft.id
    call.citizen_id = call.citizen_id or draft.citizen_id
    return draft


async def voicemail_draft(*, session: AsyncSession, call: Call, kb: KnowledgeBase, region: str) -> DraftCase:
    """A message left after hours or when no seat was free becomes a draft with the recording attached."""
    reason = {"after_hours": "非工作时间留言", "queue_timeout": "排队超时留言", "no_seat": "坐席忙留言"}.get(
        call.voicemail_reason or "", "留言")
    phone = call.caller if call.caller and call.caller.startswith("+") else None
    data = DraftCreate(
        channel=Channel.VOICEMAIL,
        text=f"【{call.did or '热线'}{reason}】市民电话留言，请收听录音后补充内容并回拨。",
        source_key=f"voicemail:{call.linkedid}",
        media=[MediaItem(kind="recording", url=f"/api/hotline/calls/{call.id}/message", mime="audio/wav")],
        reporter=Reporter(phone=phone) if phone else None,
    )
    draft = await create_draft(session=session, data=data, kb=kb, region=region)
    call.draft_id = draft.id
    call.citizen_id = call.citizen_id or draft.citizen_id
    return draft


async def mark_called_back(*, session: AsyncSession, call_id: int, operator_id: int | None) -> int:
    """A callback reached the citizen: that missed call, and their earlier unanswered ones, are done."""
    missed = await session.get(Call, call_id)
    if missed is None:
        return 0
    conditions = [Call.id == call_id]
    if missed.caller:
        conditions.append(Call.caller == missed.caller)
    result = await session.execute(
        update(Call)
        .where(or_(*conditions), Call.outcome.in_(MISSED_OUTCOMES), Call.callback_done.is_(False))
        .values(callback_done=True, callback_at=utcnow(), callback_by=operator_id)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def list_missed(*, session: AsyncSession, limit: int = 100, include_done: bool = False) -> list[Call]:
    """Abandoned, after-hours and voicemail calls waiting for a callback, newest first."""
    stmt = select(Call).where(Call.purpose == CallPurpose.HOTLINE, Call.outcome.in_(MISSED_OUTCOMES))
    if not include_done:
        stmt = stmt.where(Call.callback_done.is_(False))
    return list(await session.scalars(stmt.order_by(Call.started_at.desc()).limit(limit)))


async def list_calls(*, session: AsyncSession, limit: int = 100, outcome: CallOutcome | None = None,
                     operator_id: int | None = None) -> list[Call]:
    """Recent calls, newest first."""
    stmt = select(Call)
    if outcome is not None:
        stmt = stmt.where(Call.outcome == outcome)
    if operator_id is not None:
        stmt = stmt.where(Call.operator_id == operator_id)
    return list(await session.scalars(stmt.order_by(Call.started_at.desc()).limit(limit)))


async def start_callback(*, session: AsyncSession, missed_id: int, operator: Operator, channel_id: str) -> Call:
    """Create the outbound callback record before the Originate, linked to the missed call."""
    missed = await get_call(session=session, call_id=missed_id)
    if missed.purpose != CallPurpose.HOTLINE or not missed.caller or not missed.caller.startswith("+"):
        raise Conflict("该来电没有可回拨的号码", error_id="no-callback-number")
    if not operator.extension:
        raise Conflict("您的账号没有绑定坐席分机", error_id="no-extension")
    call = Call(linkedid=channel_id, direction=CallDirection.OUTBOUND, purpose=CallPurpose.CALLBACK,
                outcome=CallOutcome.RINGING, caller=missed.caller, did=missed.did, seat=operator.extension,
                operator_id=operator.id, citizen_id=missed.citizen_id, callback_for_id=missed.id,
                draft_id=missed.draft_id, job_id=f"cb-{missed.id}-{channel_id[:8]}")
    session.add(call)
    await session.flush()
    await record(session=session, operator=operator, action="hotline.callback", target_type="call",
                 target_id=str(missed.id), details={"to": mask_phone(missed.caller), "seat": operator.extension})
    return call


# --- screen pop -----------------------------------------------------------------------------------------


async def screen_pop(*, session: AsyncSession, call: Call, kb: KnowledgeBase, draft: DraftCase | None) -> dict[str, Any]:
    """What the seat sees while the phone rings: who calls (masked), their history, maybe-matches, the draft."""
    citizen = await session.get(Citizen, call.citizen_id) if call.citizen_id else None
    cases: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    if citizen is not None:
        rows = await session.scalars(select(Case).where(Case.citizen_id == citizen.id)
                                     .order_by(Case.created_at.desc()).limit(5))
        for case in rows:
            case_type = kb.taxonomy.get(case.case_type_code)
            cases.append({"number": case.number, "case_type": case_type.name if case_type else case.case_type_code,
                          "step": case.step.value, "state": case.state.value,
                          "created_at": case.created_at.isoformat(), "address": case.address})
    if call.caller:
        earlier = await session.scalars(
            select(Call).where(Call.caller == call.caller, Call.id != call.id)
            .order_by(Call.started_at.desc()).limit(5))
        calls = [{"id": c.id, "at": c.started_at.isoformat(), "outcome": c.outcome.value, "did": c.did}
                 for c in earlier]
    maybe: list[dict[str, Any]] = []
    if call.caller and call.caller.startswith("+86"):
        # Reports from other channels that mention this number in their text (a WeChat report with
        # "联系电话 138…") may well be the same person.
        local = call.caller.removeprefix("+86")
        since = utcnow() - dt.timedelta(days=30)
        rows2 = await session.scalars(
            select(DraftCase).where(DraftCase.raw_text.contains(local), DraftCase.created_at >= since,
                                    or_(DraftCase.citizen_id.is_(None), DraftCase.citizen_id != call.citizen_id))
            .order_by(DraftCase.created_at.desc()).limit(3))
        maybe = [{"draft_number": d.number, "channel": d.channel.value, "created_at": d.created_at.isoformat()}
                 for d in rows2]
    return {
        "call_id": call.id,
        "linkedid": call.linkedid,
        "did": call.did,
        "queue": call.queue,
        "caller_masked": mask_phone(call.caller) if call.caller else "未显示号码",
        "caller_name": citizen.display_name if citizen else None,
        "citizen_id": citizen.id if citizen else None,
        "known": citizen is not None,
        "history": {"cases": cases, "calls": calls},
        "maybe": maybe,
        "draft_id": draft.id if draft else call.draft_id,
        "draft_number": draft.number if draft else None,
    }


def call_summary(call: Call) -> dict[str, Any]:
    """A compact, masked description of a call for live events and lists."""
    return {
        "call_id": call.id,
        "linkedid": call.linkedid,
        "purpose": call.purpose.value,
        "direction": call.direction.value,
        "outcome": call.outcome.value,
        "did": call.did,
        "queue": call.queue,
        "seat": call.seat,
        "caller_masked": mask_phone(call.caller) if call.caller else "未显示号码",
        "started_at": call.started_at.isoformat(),
        "answered_at": call.answered_at.isoformat() if call.answered_at else None,
        "ended_at": call.ended_at.isoformat() if call.ended_at else None,
        "draft_id": call.draft_id,
    }


# --- seats ----------------------------------------------------------------------------------------------


async def log_seat_event(*, session: AsyncSession, operator: Operator, extension: str, kind: SeatEventKind,
                         reason: str | None = None) -> SeatEvent:
    """Append a seat event (and an audit line)."""
    if kind == SeatEventKind.PAUSE and reason not in PAUSE_REASONS:
        raise UnknownPauseReason(details={"allowed": list(PAUSE_REASONS)})
    event = SeatEvent(operator_id=operator.id, extension=extension, kind=kind, reason=reason)
    session.add(event)
    await record(session=session, operator=operator, action=f"seat.{kind.value}", target_type="seat",
                 target_id=extension, details={"reason": reason} if reason else {})
    await session.flush()
    return event


# --- 回访 (satisfaction callbacks) -------------------------------------------------------------------------


def in_hours(now: dt.datetime, hours: str) -> bool:
    """Whether local time (Asia/Shanghai) is inside 'HH:MM-HH:MM'."""
    start_s, end_s = hours.split("-")
    local = now.astimezone(LOCAL_TZ).time()
    start = dt.time.fromisoformat(start_s)
    if end_s == "24:00":
        return start <= local
    return start <= local < dt.time.fromisoformat(end_s)


def next_window(now: dt.datetime, hours: str) -> dt.datetime:
    """The first moment at or after `now` that is inside the calling hours."""
    if in_hours(now, hours):
        return now
    start = dt.time.fromisoformat(hours.split("-")[0])
    local = now.astimezone(LOCAL_TZ)
    candidate = local.replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
    if candidate <= local:
        candidate += dt.timedelta(days=1)
    return candidate.astimezone(dt.UTC)


async def schedule_surveys(*, session: AsyncSession, delay: dt.timedelta, hours: str, now: dt.datetime | None = None,
                           limit: int = 200) -> int:
    """Create one pending 回访 per newly closed (办结), unrated case whose citizen has a phone."""
    now = now or utcnow()
    since = now - dt.timedelta(days=7)  # older closures are not called any more
    rows = await session.execute(
        select(Case.id, Case.citizen_id, Case.closed_at, CitizenContact.value)
        .join(CitizenContact, and_(CitizenContact.citizen_id == Case.citizen_id,
                                   CitizenContact.kind == ContactKind.PHONE))
        .outerjoin(SurveyCall, SurveyCall.case_id == Case.id)
        .where(Case.step == Step.CLOSE, Case.state == CaseState.CLOSED, Case.rating_score.is_(None),
               Case.closed_at >= since, SurveyCall.id.is_(None))
        .order_by(Case.closed_at).limit(limit)
    )
    created = 0
    seen: set[int] = set()
    for case_id, citizen_id, closed_at, phone in rows.all():
        if case_id in seen:
            continue
        seen.add(case_id)
        due = next_window(max(now, (closed_at or now) + delay), hours)
        session.add(SurveyCall(case_id=case_id, citizen_id=citizen_id, phone=phone, job_id=f"sv-{uuid.uuid4().hex}",
                               next_attempt_at=due))
        created += 1
    await session.flush()
    return created


async def due_surveys(*, session: AsyncSession, now: dt.datetime | None = None, limit: int = 5) -> list[SurveyCall]:
    """Pending 回访 calls whose time has come (locked, so two processes never call the same citizen twice)."""
    stmt = (select(SurveyCall).where(SurveyCall.status == SurveyStatus.PENDING,
                                     SurveyCall.next_attempt_at <= (now or utcnow()))
            .order_by(SurveyCall.next_attempt_at).limit(limit).with_for_update(skip_locked=True))
    return list(await session.scalars(stmt))


async def record_survey_digit(*, session: AsyncSession, job_id: str, digit: str) -> SurveyCall | None:
    """Store the keypad answer of a 回访; a valid one becomes the case's rating (sent to the workflow)."""
    survey = await session.scalar(select(SurveyCall).where(SurveyCall.job_id == job_id).with_for_update())
    if survey is None:
        log.warning("survey result for unknown job %s ignored", job_id)
        return None
    if survey.status == SurveyStatus.RATED:
        return survey
    survey.digit = digit
    score = SURVEY_SCORES.get(digit)
    if score is None:
        survey.status = SurveyStatus.NO_INPUT
        return survey
    case = await session.get(Case, survey.case_id)
    if case is None:
        survey.status = SurveyStatus.SKIPPED
        return survey
    try:
        await rate_case(session=session, case=case, score=score, channel=Channel.HOTLINE,
                        comment=f"电话回访：{SURVEY_LABELS[digit]}（按键{digit}）")
    except Conflict as err:
        # Rated meanwhile through another channel: keep the keypad answer, do not overwrite the rating.
        survey.note = f"未记入评价：{err.message}"
    survey.score = score
    survey.status = SurveyStatus.RATED
    survey.needs_human_callback = score <= BAD_SCORE
    await session.flush()
    return survey


async def survey_attempt_failed(*, session: AsyncSession, survey: SurveyCall, status: SurveyStatus, retry_after:
                                dt.timedelta, max_attempts: int, hours: str, note: str | None = None) -> None:
    """Schedule the next attempt, or give up after the last one."""
    survey.note = note or survey.note
    if survey.attempts >= max_attempts:
        survey.status = status
        return
    survey.status = SurveyStatus.PENDING
    survey.next_attempt_at = next_window(utcnow() + retry_after, hours)


async def list_flagged_surveys(*, session: AsyncSession, limit: int = 100) -> list[SurveyCall]:
    """Bad ratings that still need the second, human callback."""
    stmt = (select(SurveyCall).where(SurveyCall.needs_human_callback.is_(True),
                                     SurveyCall.human_callback_done.is_(False))
            .order_by(SurveyCall.updated_at.desc()).limit(limit))
    return list(await session.scalars(stmt))


async def close_flagged_survey(*, session: AsyncSession, survey_id: int, operator: Operator, note: str) -> SurveyCall:
    """The operator called the unhappy citizen back: record it."""
    survey = await session.get(SurveyCall, survey_id)
    if survey is None:
        raise NotFound("回访记录不存在", error_id="survey-not-found")
    if not survey.needs_human_callback:
        raise Conflict("该回访无需人工复访", error_id="no-human-callback-needed")
    survey.human_callback_done = True
    survey.human_callback_by = operator.id
    survey.note = note
    await record(session=session, operator=operator, action="survey.human_callback", target_type="case",
                 target_id=str(survey.case_id), details={})
    await session.flush()
    return survey


# --- wallboard ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class QueueTotals:
    """Today's figures of one queue from the call records."""

    answered: int = 0
    abandoned: int = 0
    answered_in_sl: int = 0
    talk_total: float = 0.0
    talk_count: int = 0


async def queue_totals(*, session: AsyncSession, since: dt.datetime, service_level: int) -> dict[str, QueueTotals]:
    """Answered / abandoned / within-service-level counts and talk time per queue since `since`."""
    rows = await session.execute(
        select(Call.queue, Call.outcome, Call.wait_seconds, Call.talk_seconds)
        .where(Call.purpose == CallPurpose.HOTLINE, Call.started_at >= since, Call.queue.is_not(None),
               Call.outcome.in_((CallOutcome.ANSWERED, CallOutcome.ABANDONED)))
    )
    totals: dict[str, QueueTotals] = {}
    for queue, outcome, wait, talk in rows.all():
        item = totals.setdefault(queue or "", QueueTotals())
        if outcome == CallOutcome.ANSWERED:
            item.answered += 1
            if wait is not None and wait <= service_level:
                item.answered_in_sl += 1
            if talk is not None:
                item.talk_total += talk
                item.talk_count += 1
        else:
            item.abandoned += 1
    return totals


def local_midnight(now: dt.datetime | None = None) -> dt.datetime:
    """Start of today in Asia/Shanghai, as UTC."""
    local = (now or utcnow()).astimezone(LOCAL_TZ)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(dt.UTC)


async def count_missed(*, session: AsyncSession) -> int:
    """Missed calls still waiting for a callback."""
    return int(await session.scalar(
        select(func.count()).select_from(Call).where(Call.purpose == CallPurpose.HOTLINE,
                                                     Call.outcome.in_(MISSED_OUTCOMES),
                                                     Call.callback_done.is_(False))) or 0)


__all__ = ["Purpose", "Applied"]
