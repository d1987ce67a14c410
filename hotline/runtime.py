"""The long-lived hotline service of one app process: AMI link, call tracker, persistence, seats, callbacks, 回访.

Every process connects to AMI to send actions (seat login, pause, callbacks); exactly one process — the leader,
chosen with a PostgreSQL advisory lock (SQLite runs a single process) — follows the events, stores the calls,
publishes the screen pops through the event bus (Redis when there are several processes) and places 回访 calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.context import AppContext, emit
from core.db import utcnow
from core.errors import AppError, Conflict, InvalidInput
from core.models import Operator
from core.phone import mask_phone
from core.status import ComponentStatus, Health
from hotline import service
from hotline.client import AmiActionFailed, AmiClient, AmiError, AmiEvent, AmiReply, Reconnected
from hotline.models import (
    PAUSE_REASONS,
    Call,
    CallDirection,
    CallOutcome,
    CallPurpose,
    SeatEventKind,
    SurveyCall,
    SurveyStatus,
)
from hotline.pbx import parse_dids
from hotline.tracker import CallChange, CallTracker, Change, Effect, Expected, Purpose, SeatState, SurveyDigit

log = logging.getLogger(__name__)

LEADER_LOCK = 7_312_319_012_345  # pg advisory lock id of the hotline event follower
STATUS_LABELS = {0: "未知", 1: "空闲", 2: "通话中", 3: "忙", 4: "无效", 5: "未注册", 6: "振铃", 7: "振铃", 8: "保持"}
SURVEY_RESULT_WAIT = 90.0


class HotlineUnavailable(AppError):
    """The PBX cannot be reached right now."""

    status_code = 503
    error_id = "hotline-unavailable"
    message = "电话系统暂时无法连接，请稍后再试"


class NotASeat(InvalidInput):
    """The extension is not one of the seat extensions."""

    error_id = "not-a-seat"
    message = "分机号不是坐席分机"


@dataclasses.dataclass(slots=True)
class ResyncInfo:
    """The last rebuild of the call state from the PBX."""

    at: float
    seconds: float
    calls: int
    seats: int
    generation: int


# Changes that only update the record: when a later change of the same call is already waiting, it carries the
# same facts (every change holds the whole call), so one transaction replaces several and the pop comes sooner.
PURE_UPDATES = (Change.STARTED, Change.QUEUED, Change.RECORDING)


def coalesce(batch: list[Effect]) -> list[Effect]:
    """Drop pure record updates that a later change of the same call supersedes; keep the order of the rest."""
    last_index: dict[str, int] = {}
    for i, effect in enumerate(batch):
        if isinstance(effect, CallChange):
            last_index[effect.call.linkedid] = i
    return [e for i, e in enumerate(batch)
            if not (isinstance(e, CallChange) and e.kind in PURE_UPDATES and last_index[e.call.linkedid] > i)]


class HotlineService:
    """One per app process; stored on `ctx.hotline`."""

    def __init__(self, ctx: AppContext, ami: AmiClient, *, recordings_dir: Path | None) -> None:
        """Wire the tracker to the persistence queue; nothing runs until `start`."""
        self.ctx = ctx
        self.settings = ctx.settings
        self.ami = ami
        self.recordings_dir = recordings_dir
        self.dids = parse_dids(ctx.settings.hotline_dids)
        self.queues = [f"hotline-{did}" for did in self.dids]
        self._effects: asyncio.Queue[Effect] = asyncio.Queue()
        self.tracker = CallTracker(self._effects.put_nowait)
        self.leader = False
        self.last_resync: ResyncInfo | None = None
        self.changes_applied = 0
        self._survey_waiters: dict[str, asyncio.Future[str]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._leader_conn: AsyncConnection | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._listeners: list[Callable[[CallChange], Awaitable[None] | None]] = []

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to AMI and start the consumer, the persistence worker, the leader election and 回访."""
        await self.ami.start()
        self._tasks = [
            asyncio.create_task(self._consume(), name="hotline-consumer"),
            asyncio.create_task(self._persist(), name="hotline-persist"),
            asyncio.create_task(self._elect(), name="hotline-leader"),
            asyncio.create_task(self._surveys(), name="hotline-surveys"),
        ]

    async def stop(self) -> None:
        """Stop everything; queued changes are written first (bounded wait)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain_effects(), timeout=5)
        for task in [*self._tasks, *self._background]:
            task.cancel()
        for task in [*self._tasks, *self._background]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.ami.stop()
        if self._leader_conn is not None:
            with contextlib.suppress(Exception):
                await self._leader_conn.close()

    async def _drain_effects(self) -> None:
        await self._effects.join()

    async def check(self) -> ComponentStatus:
        """/status: AMI logged in and answering."""
        role = "events" if self.leader else "actions"
        if self.ami.connected:
            return ComponentStatus(Health.OK, f"{self.ami.detail} ({role})")
        return ComponentStatus(Health.FAIL, self.ami.detail)

    def info(self) -> dict[str, Any]:
        """Runtime state for operators and tests."""
        return {
            "connected": self.ami.connected,
            "leader": self.leader,
            "live_calls": len(self.tracker.calls),
            "ignored_events": self.tracker.ignored,
            "changes_applied": self.changes_applied,
            "pending_changes": self._effects.qsize(),
            "last_resync": dataclasses.asdict(self.last_resync) if self.last_resync else None,
        }

    # --- leader election ---------------------------------------------------------------------------------

    async def _elect(self) -> None:
        if self.ctx.engine.dialect.name != "postgresql":
            await self._become_leader()
            return
        while True:
            try:
                if self._leader_conn is None:
                    conn = await self.ctx.engine.connect()
                    got = await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK})
                    await conn.commit()
                    if got:
                        self._leader_conn = conn
                        await self._become_leader()
                    else:
                        await conn.close()
                else:
                    await self._leader_conn.scalar(text("SELECT 1"))
                    await self._leader_conn.commit()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - losing the lock connection means losing leadership
                log.warning("hotline leader election: %s", err)
                if self._leader_conn is not None:
                    self.leader = False
                    with contextlib.suppress(Exception):
                        await self._leader_conn.close()
                    self._leader_conn = None
            await asyncio.sleep(2.0)

    async def _become_leader(self) -> None:
        log.info("this process follows the hotline calls (leader)")
        self.leader = True
        if self.ami.connected:
            # Events before now were dropped by the follower: rebuild from the PBX.
            self.ami.events.put_nowait(Reconnected(0, time.time()))

    # --- event consumer ------------------------------------------------------------------------------------

    async def _consume(self) -> None:
        while True:
            item = await self.ami.events.get()
            if not self.leader:
                continue
            if isinstance(item, Reconnected):
                await self._resync(item)
                continue
            try:
                self.tracker.handle(item)
            except Exception:  # noqa: BLE001 - one odd event must not stop the consumer
                log.exception("AMI event %s could not be applied", item.name)

    async def _resync(self, marker: Reconnected) -> None:
        started = time.monotonic()
        for attempt in range(10):
            try:
                status = await self.ami.action("QueueStatus")
                channels = await self.ami.action("CoreShowChannels")
                break
            except AmiError as err:
                # Right after a PBX start AMI answers before app_queue is loaded ("Invalid/unknown command").
                log.info("state rebuild not possible yet (%s), attempt %d", err, attempt + 1)
                await asyncio.sleep(0.3)
        else:
            return  # the link is gone again; the next login brings the next marker
        self.tracker.rebuild(channels=list(channels.events), queue_status=list(status.events), now=time.time(),
                             lost_at=marker.lost_at)
        self.tracker.expire(time.time())
        self.last_resync = ResyncInfo(at=time.time(), seconds=round(time.monotonic() - started, 3),
                                      calls=len(self.tracker.calls), seats=len(self.tracker.seats),
                                      generation=marker.generation)
        log.info("hotline state rebuilt in %.3f s: %d live calls, %d queue members", self.last_resync.seconds,
                 len(self.tracker.calls), len(self.tracker.seats))

    # --- persistence and live events ----------------------------------------------------------------------

    def add_listener(self, listener: Callable[[CallChange], Awaitable[None] | None]) -> None:
        """Call `listener` after each stored call change (benchmarks, tests)."""
        self._listeners.append(listener)

    async def _persist(self) -> None:
        while True:
            batch = [await self._effects.get()]
            while not self._effects.empty() and len(batch) < 200:
                batch.append(self._effects.get_nowait())
            try:
                for effect in coalesce(batch):
                    await self._apply_with_retry(effect)
            finally:
                for _ in batch:
                    self._effects.task_done()

    async def _apply_with_retry(self, effect: Effect) -> None:
        delay = 0.2
        while True:
            try:
                await self._apply(effect)
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep the change and retry: a call record is never dropped
                log.exception("storing hotline change %s failed; retrying", type(effect).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _apply(self, effect: Effect) -> None:
        if isinstance(effect, CallChange):
            await self._apply_call(effect)
        elif isinstance(effect, SeatState):
            await self._apply_seat(effect)
        elif isinstance(effect, SurveyDigit):
            await self._apply_survey_digit(effect)

    async def _apply_call(self, change: CallChange) -> None:
        wrapup = self.settings.hotline_wrapup_seconds
        async with self.ctx.uow() as session:
            applied = await service.apply_change(session=session, change=change, kb=self.ctx.kb,
                                                 recordings_dir=self.recordings_dir,
                                                 region=self.settings.default_region)
            call, operator = applied.call, applied.operator
            base = {"call_id": call.id, "linkedid": call.linkedid, "event_at": change.at,
                    "caller_masked": mask_phone(call.caller) if call.caller else "未显示号码", "did": call.did,
                    "purpose": call.purpose.value}
            if change.kind == Change.RINGING and operator is not None:
                pop = await service.screen_pop(session=session, call=call, kb=self.ctx.kb, draft=applied.draft)
                emit(session, "call.ringing", {**pop, **base, "operator_id": operator.id, "seat": change.seat})
            elif change.kind == Change.RING_STOPPED and operator is not None:
                emit(session, "call.ring_stopped", {**base, "operator_id": operator.id, "seat": change.seat})
            elif change.kind == Change.CONNECTED and operator is not None:
                emit(session, "call.connected", {**base, "operator_id": operator.id, "seat": call.seat,
                                                 "answered_at": call.answered_at.isoformat()
                                                 if call.answered_at else None, "draft_id": call.draft_id})
            elif change.kind == Change.ENDED:
                if operator is not None and call.answered_at is not None:
                    emit(session, "call.ended", {**base, "operator_id": operator.id, "seat": call.seat,
                                                 "outcome": call.outcome.value, "wrapup_seconds": wrapup,
                                                 "talk_seconds": call.talk_seconds, "draft_id": call.draft_id})
                if applied.missed:
                    emit(session, "call.missed", service.call_summary(call))
                if applied.callback_answered_for is not None:
                    emit(session, "call.called_back", {"call_id": applied.callback_answered_for})
                if applied.draft is not None and call.outcome != CallOutcome.ANSWERED:
                    emit(session, "call.voicemail", {**base, "draft_id": applied.draft.id})
        self.changes_applied += 1
        for listener in self._listeners:
            result = listener(change)
            if asyncio.iscoroutine(result):
                await result

    async def _apply_seat(self, state: SeatState) -> None:
        async with self.ctx.uow() as session:
            operator = await service.operator_by_member(session=session, member=state.member)
            if operator is None:
                return
            emit(session, "seat.state", {"operator_id": operator.id, **self._seat_view(state)})

    def _seat_view(self, state: SeatState) -> dict[str, Any]:
        wrapup_until = state.last_call + self.settings.hotline_wrapup_seconds if state.last_call else 0
        in_wrapup = bool(wrapup_until and time.time() < wrapup_until and not state.in_call)
        return {
            "extension": state.extension, "queue": state.queue, "logged_in": not state.removed,
            "paused": state.paused, "reason": state.reason or None, "status": state.status,
            "status_label": "话后整理" if in_wrapup else STATUS_LABELS.get(state.status, "未知"),
            "in_call": state.in_call, "calls_taken": state.calls_taken,
            "wrapup_until": wrapup_until if in_wrapup else None,
        }

    async def _apply_survey_digit(self, digit: SurveyDigit) -> None:
        async with self.ctx.uow() as session:
            survey = await service.record_survey_digit(session=session, job_id=digit.job_id, digit=digit.digit)
            if survey is not None and survey.needs_human_callback:
                emit(session, "survey.flagged", {"survey_id": survey.id, "case_id": survey.case_id,
                                                 "score": survey.score})
        waiter = self._survey_waiters.get(digit.job_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(digit.digit)

    # --- seats ---------------------------------------------------------------------------------------------

    def _interface(self, extension: str) -> str:
        first, count = self.settings.hotline_seat_first, self.settings.hotline_seat_count
        if not extension.isdigit() or not first <= int(extension) < first + count:
            raise NotASeat(details={"extension": extension, "first": first, "last": first + count - 1})
        return f"PJSIP/{extension}"

    async def _action(self, name: str, fields: dict[str, Any] | None = None) -> AmiReply:
        try:
            return await self.ami.action(name, fields)
        except AmiActionFailed:
            raise
        except AmiError as err:
            raise HotlineUnavailable(details={"reason": str(err)}) from err

    async def members(self, interface: str | None = None) -> list[AmiEvent]:
        """Queue members as Asterisk has them now (optionally one interface)."""
        reply = await self._action("QueueStatus", {"Member": interface} if interface else None)
        return [e for e in reply.events if e.name == "QueueMember" and e.get("Queue") in self.queues]

    async def seat_status(self, operator: Operator) -> dict[str, Any]:
        """The operator's seat as Asterisk reports it (the source of truth, also after restarts)."""
        if not operator.extension:
            return {"extension": None, "logged_in": False, "queues": []}
        interface = self._interface(operator.extension)
        rows = [m for m in await self.members(interface) if m.get("Location") == interface]
        mine = [m for m in rows if m.get("Name") == operator.username]
        if not mine:
            taken_by = rows[0].get("Name") if rows else None
            return {"extension": operator.extension, "logged_in": False, "queues": [], "taken_by": taken_by}
        first = mine[0]
        state = self.tracker._seat_from(first, interface=interface, name=operator.username)
        view = self._seat_view(state)
        view.pop("queue", None)
        return {**view, "queues": [m.get("Queue") for m in mine]}

    async def seat_login(self, operator: Operator, extension: str | None) -> dict[str, Any]:
        """Log the operator's extension into every hotline queue (MemberName = username)."""
        extension = extension or operator.extension
        if not extension:
            raise InvalidInput("请填写坐席分机号", error_id="extension-required")
        interface = self._interface(extension)
        current = await self.members(interface)
        others = {m.get("Name") for m in current if m.get("Location") == interface} - {operator.username}
        if others:
            raise Conflict("该分机已被其他坐席登录", error_id="seat-taken", details={"by": sorted(others)})
        if operator.extension and operator.extension != extension:
            await self.seat_logout(operator)  # one seat per operator
        for queue in self.queues:
            try:
                await self._action("QueueAdd", {"Queue": queue, "Interface": interface, "Penalty": "0",
                                                "MemberName": operator.username, "StateInterface": interface})
            except AmiActionFailed as err:
                if "already there" not in str(err).lower():
                    raise HotlineUnavailable(details={"reason": str(err)}) from err
        async with self.ctx.uow() as session:
            row = await session.get(Operator, operator.id)
            assert row is not None
            row.extension = extension  # hot-desking: the operator sits at this seat now
            await service.log_seat_event(session=session, operator=row, extension=extension,
                                         kind=SeatEventKind.LOGIN)
        operator.extension = extension
        return await self.seat_status(operator)

    async def seat_logout(self, operator: Operator) -> dict[str, Any]:
        """Remove the operator's extension from the queues."""
        if not operator.extension:
            return {"extension": None, "logged_in": False, "queues": []}
        interface = self._interface(operator.extension)
        for member in await self.members(interface):
            if member.get("Location") == interface and member.get("Name") == operator.username:
                with contextlib.suppress(AmiActionFailed):
                    await self._action("QueueRemove", {"Queue": member.get("Queue"), "Interface": interface})
        async with self.ctx.uow() as session:
            row = await session.get(Operator, operator.id)
            assert row is not None
            await service.log_seat_event(session=session, operator=row, extension=operator.extension,
                                         kind=SeatEventKind.LOGOUT)
        return await self.seat_status(operator)

    async def seat_pause(self, operator: Operator, *, paused: bool, reason: str | None = None) -> dict[str, Any]:
        """示忙 with a reason (小休, 培训, 整理) or 示闲, in every queue."""
        if paused and reason not in PAUSE_REASONS:
            raise service.UnknownPauseReason(details={"allowed": list(PAUSE_REASONS)})
        status = await self.seat_status(operator)
        if not status.get("logged_in"):
            raise Conflict("请先签入坐席", error_id="seat-not-logged-in")
        assert operator.extension is not None
        fields = {"Interface": self._interface(operator.extension), "Paused": "true" if paused else "false"}
        if paused and reason:
            fields["Reason"] = reason
        try:
            await self._action("QueuePause", fields)
        except AmiActionFailed as err:
            raise HotlineUnavailable(details={"reason": str(err)}) from err
        async with self.ctx.uow() as session:
            row = await session.get(Operator, operator.id)
            assert row is not None
            await service.log_seat_event(session=session, operator=row, extension=operator.extension,
                                         kind=SeatEventKind.PAUSE if paused else SeatEventKind.RESUME,
                                         reason=reason if paused else None)
        return await self.seat_status(operator)

    # --- callbacks -------------------------------------------------------------------------------------------

    async def callback(self, missed_id: int, operator: Operator) -> dict[str, Any]:
        """One click: ring the operator's seat, then dial the citizen with the hotline number as caller id."""
        if not self.ami.connected:
            raise HotlineUnavailable()
        channel_id = f"cb-{uuid.uuid4().hex}"
        async with self.ctx.uow() as session:
            call = await service.start_callback(session=session, missed_id=missed_id, operator=operator,
                                                channel_id=channel_id)
            summary = service.call_summary(call)
            number, did, job_id = call.caller or "", call.did or self.dids[0], call.job_id or ""
            extension = call.seat or ""
        self.tracker.expect(channel_id, Expected(purpose=Purpose.CALLBACK, job_id=job_id, number=number, did=did))
        task = asyncio.create_task(self._originate_callback(call_id=summary["call_id"], channel_id=channel_id,
                                                            extension=extension, number=number, did=did,
                                                            job_id=job_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return summary

    async def _originate_callback(self, *, call_id: int, channel_id: str, extension: str, number: str, did: str,
                                  job_id: str) -> None:
        try:
            result = await self.ami.originate(
                channel=f"PJSIP/{extension}", context="callback", exten=service.national_number(number),
                caller_id=f'"回拨 {mask_phone(number)}" <{did}>',
                variables={"JOB_ID": job_id, "CALLBACK_DID": did}, channel_id=channel_id, ring_timeout=30)
            failure = None if result.answered else f"seat did not answer (reason {result.reason})"
        except AmiError as err:
            failure = str(err)
        if failure is None:
            return  # the tracker follows the call from here
        log.info("callback %s failed: %s", call_id, failure)
        async with self.ctx.uow() as session:
            call = await service.get_call(session=session, call_id=call_id)
            if call.ended_at is None and call.answered_at is None:
                call.outcome = CallOutcome.FAILED
                call.ended_at = utcnow()
                call.hangup_cause = failure[:64]
            emit(session, "call.callback_failed", {"call_id": call_id, "operator_id": call.operator_id,
                                                   "reason": failure})

    # --- 回访 ----------------------------------------------------------------------------------------------

    async def _surveys(self) -> None:
        while True:
            await asyncio.sleep(self.settings.hotline_survey_poll_seconds)
            if not (self.leader and self.settings.hotline_survey_enabled and self.ami.connected):
                continue
            try:
                await self.run_surveys_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - try again next round
                log.exception("回访 scheduling failed")

    async def run_surveys_once(self, *, now: dt.datetime | None = None, wait: bool = False) -> int:
        """Schedule 回访 for newly closed cases and start the due calls; return how many calls started."""
        settings = self.settings
        now = now or utcnow()
        async with self.ctx.uow() as session:
            await service.schedule_surveys(session=session, delay=dt.timedelta(
                minutes=settings.hotline_survey_delay_minutes), hours=settings.hotline_survey_hours, now=now)
        if not service.in_hours(now, settings.hotline_survey_hours):
            return 0
        async with self.ctx.uow() as session:
            due = await service.due_surveys(session=session, now=now, limit=2)
            jobs = []
            for survey in due:
                survey.status = SurveyStatus.CALLING
                survey.attempts += 1
                survey.last_attempt_at = utcnow()
                jobs.append((survey.id, survey.job_id, survey.phone, survey.case_id))
        tasks = []
        for survey_id, job_id, phone, case_id in jobs:
            log.info("回访 call for case %s to %s", case_id, mask_phone(phone))
            task = asyncio.create_task(self._survey_call(survey_id=survey_id, job_id=job_id, phone=phone,
                                                         case_id=case_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            tasks.append(task)
        if wait and tasks:
            await asyncio.gather(*tasks)
        return len(tasks)

    async def _survey_call(self, *, survey_id: int, job_id: str, phone: str, case_id: int) -> None:
        settings = self.settings
        channel_id = f"sv-{uuid.uuid4().hex}"
        did = self.dids[0]
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._survey_waiters[job_id] = waiter
        async with self.ctx.uow() as session:
            session.add(Call(linkedid=channel_id, direction=CallDirection.OUTBOUND, purpose=CallPurpose.SURVEY,
                             outcome=CallOutcome.RINGING, caller=phone, did=did, case_id=case_id, job_id=job_id))
        self.tracker.expect(channel_id, Expected(purpose=Purpose.SURVEY, job_id=job_id, number=phone, did=did,
                                                 case_id=str(case_id)))
        status: SurveyStatus | None = None
        note = None
        try:
            result = await self.ami.originate(
                channel=f"PJSIP/{service.national_number(phone)}@carrier", context="survey", exten="s",
                caller_id=f"<{did}>", variables={"JOB_ID": job_id, "CASE_ID": str(case_id)},
                channel_id=channel_id, ring_timeout=40)
            if not result.answered:
                status, note = SurveyStatus.NO_ANSWER, f"未接听（{result.reason}）"
            else:
                digit: str | None
                try:
                    digit = await asyncio.wait_for(asyncio.shield(waiter), SURVEY_RESULT_WAIT)
                except TimeoutError:
                    digit = await self._survey_digit_from_db(job_id)
                    if digit is not None:
                        await self._apply_survey_digit(SurveyDigit(job_id=job_id, case_id=str(case_id),
                                                                   digit=digit, at=time.time()))
                if digit is None or digit not in service.SURVEY_SCORES:
                    status, note = SurveyStatus.NO_INPUT, "接听但未按键"
        except AmiError as err:
            status, note = SurveyStatus.FAILED, f"呼叫失败：{err}"[:200]
        finally:
            self._survey_waiters.pop(job_id, None)
        if status is None:
            log.info("回访 for case %s answered", case_id)
            return
        log.info("回访 for case %s: %s (%s)", case_id, status.value, note)
        async with self.ctx.uow() as session:
            survey = await session.get(SurveyCall, survey_id)
            if survey is not None and survey.status == SurveyStatus.CALLING:
                await service.survey_attempt_failed(
                    session=session, survey=survey, status=status, note=note,
                    retry_after=dt.timedelta(minutes=settings.hotline_survey_retry_minutes),
                    max_attempts=settings.hotline_survey_max_attempts, hours=settings.hotline_survey_hours)

    async def _survey_digit_from_db(self, job_id: str) -> str | None:
        # The dialplan also keeps the answer in AstDB, for when the UserEvent was missed during an AMI drop.
        try:
            reply = await self.ami.action("DBGet", {"Family": "survey", "Key": job_id})
        except AmiError:
            return None
        value = next((e.get("Val") for e in reply.events if e.name == "DBGetResponse"), None)
        return value or None

    # --- supervisor --------------------------------------------------------------------------------------

    async def set_mode(self, mode: str) -> None:
        """Force the hotline open or closed (or back to working hours) until the PBX restarts."""
        if mode not in ("auto", "open", "closed"):
            raise InvalidInput("模式须为 auto、open 或 closed", error_id="invalid-mode")
        await self._action("Setvar", {"Variable": "HOTLINE_MODE", "Value": mode})

    async def wallboard(self) -> dict[str, Any]:
        """Per-queue figures: live from Asterisk (waiting, longest wait, seats), today's from the call records."""
        settings = self.settings
        live: list[AmiEvent] | None
        try:
            live = list((await self.ami.action("QueueStatus")).events) if self.ami.connected else None
        except AmiError:
            live = None
        async with self.ctx.sessions() as session:
            totals = await service.queue_totals(session=session, since=service.local_midnight(),
                                                service_level=settings.hotline_service_level_seconds)
            missed = await service.count_missed(session=session)
        queues = []
        now = time.time()
        for queue in self.queues:
            item = totals.get(queue, service.QueueTotals())
            offered = item.answered + item.abandoned
            figures: dict[str, Any] = {
                "queue": queue, "did": queue.removeprefix("hotline-"),
                "answered": item.answered, "abandoned": item.abandoned,
                "answer_rate": round(item.answered / offered, 4) if offered else None,
                "service_level": round(item.answered_in_sl / offered, 4) if offered else None,
                "service_level_seconds": settings.hotline_service_level_seconds,
                "aht_seconds": round(item.talk_total / item.talk_count + settings.hotline_wrapup_seconds, 1)
                if item.talk_count else None,
                "waiting": None, "longest_wait_seconds": None,
                "seats": None,
            }
            if live is not None:
                entries = [e for e in live if e.name == "QueueEntry" and e.get("Queue") == queue]
                members = [e for e in live if e.name == "QueueMember" and e.get("Queue") == queue]
                figures["waiting"] = len(entries)
                figures["longest_wait_seconds"] = max((int(e.get("Wait") or 0) for e in entries), default=0)
                seats = {"logged_in": len(members), "available": 0, "paused": 0, "in_call": 0, "wrapup": 0,
                         "unavailable": 0}
                for m in members:
                    status = int(m.get("Status") or 0)
                    last_call = int(m.get("LastCall") or 0)
                    if m.get("Paused") == "1":
                        seats["paused"] += 1
                    elif status in (5, 4, 0):
                        seats["unavailable"] += 1
                    elif m.get("InCall") == "1" or status in (2, 3, 6, 7, 8):
                        seats["in_call"] += 1
                    elif last_call and now < last_call + settings.hotline_wrapup_seconds:
                        seats["wrapup"] += 1
                    else:
                        seats["available"] += 1
                figures["seats"] = seats
            queues.append(figures)
        return {"live": live is not None, "missed_waiting_callback": missed, "queues": queues,
                "generated_at": utcnow().isoformat()}
