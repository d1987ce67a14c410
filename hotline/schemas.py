"""Request and response bodies of the hotline API (phone numbers always masked)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

from core.phone import mask_phone
from hotline.models import Call, SurveyCall


class SeatLogin(BaseModel):
    """签入: the extension of the phone on the operator's desk (default: the last one used)."""

    model_config = ConfigDict(extra="forbid")

    extension: Annotated[str, StringConstraints(pattern=r"^\d{2,8}$")] | None = None


class SeatPause(BaseModel):
    """示忙 with one of the standard reasons."""

    model_config = ConfigDict(extra="forbid")

    reason: Literal["小休", "培训", "整理"]


class HotlineMode(BaseModel):
    """Force the hotline open or closed, or follow the working hours."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["auto", "open", "closed"]


class SurveyDone(BaseModel):
    """The human follow-up call after a bad 回访 rating."""

    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=1000)]


class CallRead(BaseModel):
    """A call record as the console shows it."""

    id: int
    linkedid: str
    purpose: str
    direction: str
    outcome: str
    caller_masked: str
    did: str | None
    queue: str | None
    seat: str | None
    operator_id: int | None
    citizen_id: int | None
    draft_id: int | None
    case_id: int | None
    started_at: dt.datetime
    queued_at: dt.datetime | None
    ringing_at: dt.datetime | None
    answered_at: dt.datetime | None
    ended_at: dt.datetime | None
    wait_seconds: float | None
    ring_seconds: float | None
    talk_seconds: float | None
    hangup_cause: str | None
    has_recording: bool
    has_message: bool
    voicemail_reason: str | None
    callback_done: bool
    callback_for_id: int | None
    callback_at: dt.datetime | None

    @classmethod
    def of(cls, call: Call, *, case_id: int | None = None) -> CallRead:
        """Render a call."""
        return cls(
            id=call.id, linkedid=call.linkedid, purpose=call.purpose.value, direction=call.direction.value,
            outcome=call.outcome.value, caller_masked=mask_phone(call.caller) if call.caller else "未显示号码",
            did=call.did, queue=call.queue, seat=call.seat, operator_id=call.operator_id,
            citizen_id=call.citizen_id, draft_id=call.draft_id, case_id=case_id or call.case_id,
            started_at=call.started_at, queued_at=call.queued_at, ringing_at=call.ringing_at,
            answered_at=call.answered_at, ended_at=call.ended_at, wait_seconds=call.wait_seconds,
            ring_seconds=call.ring_seconds, talk_seconds=call.talk_seconds, hangup_cause=call.hangup_cause,
            has_recording=bool(call.recording_path), has_message=bool(call.voicemail_path),
            voicemail_reason=call.voicemail_reason, callback_done=call.callback_done,
            callback_for_id=call.callback_for_id, callback_at=call.callback_at,
        )


class SurveyRead(BaseModel):
    """A 回访 and its outcome."""

    id: int
    case_id: int
    phone_masked: str
    status: str
    attempts: int
    digit: str | None
    score: int | None
    needs_human_callback: bool
    human_callback_done: bool
    note: str | None
    next_attempt_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, survey: SurveyCall) -> SurveyRead:
        """Render a survey."""
        return cls(id=survey.id, case_id=survey.case_id, phone_masked=mask_phone(survey.phone),
                   status=survey.status.value, attempts=survey.attempts, digit=survey.digit, score=survey.score,
                   needs_human_callback=survey.needs_human_callback,
                   human_callback_done=survey.human_callback_done, note=survey.note,
                   next_attempt_at=survey.next_attempt_at, updated_at=survey.updated_at)


SeatView = dict[str, Any]
