"""Hotline API: the seat (签入/签出/示忙/示闲), calls and recordings, missed calls and callbacks, 回访, wallboard."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy import select

from core.audit import record
from core.cases.models import Case
from core.deps import Ctx, CurrentLogin, require_role
from core.errors import AppError, NotFound
from core.models import Role
from hotline import service
from hotline.models import Call, CallOutcome
from hotline.runtime import HotlineService
from hotline.schemas import CallRead, HotlineMode, SeatLogin, SeatPause, SurveyDone, SurveyRead

router = APIRouter(prefix="/api/hotline", tags=["hotline"])


class HotlineNotConfigured(AppError):
    """No PBX is configured for this installation."""

    status_code = 503
    error_id = "hotline-not-configured"
    message = "未配置电话系统（INTAKE_AMI_HOST）"


def _hotline(ctx: Any) -> HotlineService:
    hotline: HotlineService | None = ctx.hotline
    if hotline is None:
        raise HotlineNotConfigured()
    return hotline


async def _case_ids(session: Any, calls: list[Call]) -> dict[int, int]:
    draft_ids = [c.draft_id for c in calls if c.draft_id]
    if not draft_ids:
        return {}
    rows = await session.execute(select(Case.draft_id, Case.id).where(Case.draft_id.in_(draft_ids)))
    return {int(draft_id): int(case_id) for draft_id, case_id in rows.all()}


async def _read_calls(session: Any, calls: list[Call]) -> list[CallRead]:
    cases = await _case_ids(session, calls)
    return [CallRead.of(c, case_id=cases.get(c.draft_id or -1)) for c in calls]


@router.get("/status")
async def hotline_status(ctx: Ctx, login: CurrentLogin) -> dict[str, Any]:
    """AMI link, leadership and the last state rebuild of this process."""
    return _hotline(ctx).info()


@router.get("/seat")
async def seat(ctx: Ctx, login: CurrentLogin) -> dict[str, Any]:
    """My seat as Asterisk reports it."""
    return await _hotline(ctx).seat_status(login.operator)


@router.post("/seat/login")
async def seat_login(body: SeatLogin, ctx: Ctx, login: CurrentLogin) -> dict[str, Any]:
    """签入: log my extension into the hotline queues."""
    return await _hotline(ctx).seat_login(login.operator, body.extension)


@router.post("/seat/logout")
async def seat_logout(ctx: Ctx, login: CurrentLogin) -> dict[str, Any]:
    """签出: leave the queues."""
    return await _hotline(ctx).seat_logout(login.operator)


@router.post("/seat/pause")
async def seat_pause(body: SeatPause, ctx: Ctx, login: CurrentLogin) -> dict[str, Any]:
    """示忙 with a reason (小休, 培训, 整理): no queue call rings until resumed."""
    return await _hotline(ctx).seat_pause(login.operator, paused=True, reason=body.reason)


@router.post("/seat/resume")
async def seat_resume(ctx: Ctx, login: CurrentLogin) -> dict[str, Any]:
    """示闲: ready for queue calls again."""
    return await _hotline(ctx).seat_pause(login.operator, paused=False)


@router.get("/calls", response_model=list[CallRead])
async def calls(ctx: Ctx, login: CurrentLogin, outcome: CallOutcome | None = None, mine: bool = False,
                limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[CallRead]:
    """Recent calls, newest first."""
    async with ctx.sessions() as session:
        rows = await service.list_calls(session=session, limit=limit, outcome=outcome,
                                        operator_id=login.operator.id if mine else None)
        return await _read_calls(session, rows)


@router.get("/calls/{call_id}", response_model=CallRead)
async def call(call_id: int, ctx: Ctx, login: CurrentLogin) -> CallRead:
    """One call record."""
    async with ctx.sessions() as session:
        row = await service.get_call(session=session, call_id=call_id)
        return (await _read_calls(session, [row]))[0]


async def _audio(call_id: int, request: Request, ctx: Any, login: Any, *, message: bool) -> FileResponse:
    async with ctx.uow() as session:
        row = await service.get_call(session=session, call_id=call_id)
        hotline: HotlineService | None = ctx.hotline
        directory = hotline.recordings_dir if hotline else ctx.settings.hotline_recordings_dir
        path = service.recording_file(directory, row.voicemail_path if message else row.recording_path)
        if path is None:
            raise NotFound("录音不存在", error_id="recording-not-found")
        # Listening to a citizen's voice is personal data access: audited like revealing a number.
        await record(session=session, operator=login.operator, action="call.listen", target_type="call",
                     target_id=str(call_id), details={"message": message},
                     ip=request.client.host if request.client else None)
    return FileResponse(path, media_type="audio/wav", headers={"Cache-Control": "no-store"})


@router.get("/calls/{call_id}/recording")
async def call_recording(call_id: int, request: Request, ctx: Ctx, login: CurrentLogin) -> FileResponse:
    """The conversation recording (WAV)."""
    return await _audio(call_id, request, ctx, login, message=False)


@router.get("/calls/{call_id}/message")
async def call_message(call_id: int, request: Request, ctx: Ctx, login: CurrentLogin) -> FileResponse:
    """The message left after hours or when no seat was free (WAV)."""
    return await _audio(call_id, request, ctx, login, message=True)


@router.get("/missed", response_model=list[CallRead])
async def missed(ctx: Ctx, login: CurrentLogin, include_done: bool = False,
                 limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[CallRead]:
    """Abandoned, after-hours and voicemail calls waiting for a callback."""
    async with ctx.sessions() as session:
        rows = await service.list_missed(session=session, limit=limit, include_done=include_done)
        return await _read_calls(session, rows)


@router.post("/missed/{call_id}/callback", status_code=202)
async def callback(call_id: int, ctx: Ctx, login: CurrentLogin) -> dict[str, Any]:
    """回拨: ring my seat, then the citizen (caller id: the hotline number); follow it on the live stream."""
    return await _hotline(ctx).callback(call_id, login.operator)


@router.get("/wallboard")
async def wallboard(ctx: Ctx, login: CurrentLogin) -> dict[str, Any]:
    """Per-queue figures: waiting, longest wait, answered, abandoned, answer rate, service level, AHT, seats."""
    return await _hotline(ctx).wallboard()


@router.post("/mode", status_code=204, dependencies=[require_role(Role.SUPERVISOR)])
async def mode(body: HotlineMode, ctx: Ctx, login: CurrentLogin) -> None:
    """Force the hotline open or closed (值班长), or back to the working hours."""
    await _hotline(ctx).set_mode(body.mode)
    async with ctx.uow() as session:
        await record(session=session, operator=login.operator, action="hotline.mode", details={"mode": body.mode})


@router.get("/surveys/flagged", response_model=list[SurveyRead])
async def flagged_surveys(ctx: Ctx, login: CurrentLogin) -> list[SurveyRead]:
    """Bad 回访 ratings that need a second, human callback."""
    async with ctx.sessions() as session:
        return [SurveyRead.of(s) for s in await service.list_flagged_surveys(session=session)]


@router.post("/surveys/{survey_id}/done", response_model=SurveyRead)
async def survey_done(survey_id: int, body: SurveyDone, ctx: Ctx, login: CurrentLogin) -> SurveyRead:
    """Record the human follow-up of a bad rating."""
    async with ctx.uow() as session:
        survey = await service.close_flagged_survey(session=session, survey_id=survey_id, operator=login.operator,
                                                    note=body.note)
        return SurveyRead.of(survey)
