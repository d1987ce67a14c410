"""Call records: every call, answered or not, with its times, seat, recording and outcome."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, utcnow
from core.models import str_enum


class CallDirection(enum.StrEnum):
    """Inbound citizen call or outbound callback."""

    INBOUND = "in"
    OUTBOUND = "out"


class CallOutcome(enum.StrEnum):
    """How the call ended for the citizen."""

    RINGING = "ringing"
    QUEUED = "queued"
    ANSWERED = "answered"
    ABANDONED = "abandoned"
    AFTER_HOURS = "after_hours"
    VOICEMAIL = "voicemail"
    NO_ANSWER = "no_answer"
    FAILED = "failed"


class CallPurpose(enum.StrEnum):
    """A citizen calling the hotline, a seat calling a citizen back, or a 回访 survey call."""

    HOTLINE = "hotline"
    CALLBACK = "callback"
    SURVEY = "survey"


MISSED_OUTCOMES = (CallOutcome.ABANDONED, CallOutcome.AFTER_HOURS, CallOutcome.VOICEMAIL)


class Call(Base):
    """One call, keyed by Asterisk's Linkedid."""

    __tablename__ = "calls"
    __table_args__ = (Index("ix_calls_missed", "outcome", "callback_done"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    linkedid: Mapped[str] = mapped_column(String(64), unique=True)
    direction: Mapped[CallDirection] = mapped_column(str_enum(CallDirection), default=CallDirection.INBOUND)
    outcome: Mapped[CallOutcome] = mapped_column(str_enum(CallOutcome), default=CallOutcome.RINGING)
    caller: Mapped[str | None] = mapped_column(String(32), index=True)
    did: Mapped[str | None] = mapped_column(String(16))
    queue: Mapped[str | None] = mapped_column(String(32))
    seat: Mapped[str | None] = mapped_column(String(16))
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    citizen_id: Mapped[int | None] = mapped_column(ForeignKey("citizens.id", ondelete="SET NULL"), index=True)
    draft_id: Mapped[int | None] = mapped_column(ForeignKey("draft_cases.id", ondelete="SET NULL"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    queued_at: Mapped[dt.datetime | None]
    ringing_at: Mapped[dt.datetime | None]
    answered_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    wait_seconds: Mapped[float | None]
    ring_seconds: Mapped[float | None]
    talk_seconds: Mapped[float | None]
    hangup_cause: Mapped[str | None] = mapped_column(String(64))
    recording_path: Mapped[str | None] = mapped_column(String(512))
    callback_done: Mapped[bool] = mapped_column(default=False)
    purpose: Mapped[CallPurpose] = mapped_column(str_enum(CallPurpose), default=CallPurpose.HOTLINE)
    voicemail_path: Mapped[str | None] = mapped_column(String(512))
    voicemail_reason: Mapped[str | None] = mapped_column(String(32))
    job_id: Mapped[str | None] = mapped_column(String(64), index=True)
    callback_for_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"))
    callback_at: Mapped[dt.datetime | None]
    callback_by: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    restored: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SeatEventKind(enum.StrEnum):
    """What a seat did (login into the queues, 示忙 with a reason, back to ready, logout)."""

    LOGIN = "login"
    LOGOUT = "logout"
    PAUSE = "pause"
    RESUME = "resume"


PAUSE_REASONS = ("小休", "培训", "整理")


class SeatEvent(Base):
    """One seat state change an operator made: the audit trail and the source of break-time reports."""

    __tablename__ = "seat_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"), index=True)
    extension: Mapped[str] = mapped_column(String(16))
    kind: Mapped[SeatEventKind] = mapped_column(str_enum(SeatEventKind))
    reason: Mapped[str | None] = mapped_column(String(32))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class SurveyStatus(enum.StrEnum):
    """Where a 回访 (satisfaction callback) stands."""

    PENDING = "pending"
    CALLING = "calling"
    RATED = "rated"
    NO_ANSWER = "no_answer"
    NO_INPUT = "no_input"
    FAILED = "failed"
    SKIPPED = "skipped"


class SurveyCall(Base):
    """The automatic 回访 of one closed case: attempts, the keypad answer, and the human follow-up if it was bad."""

    __tablename__ = "survey_calls"
    __table_args__ = (Index("ix_survey_calls_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), unique=True)
    citizen_id: Mapped[int | None] = mapped_column(ForeignKey("citizens.id", ondelete="SET NULL"))
    phone: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[SurveyStatus] = mapped_column(str_enum(SurveyStatus), default=SurveyStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_attempt_at: Mapped[dt.datetime | None]
    digit: Mapped[str | None] = mapped_column(String(8))
    score: Mapped[int | None]
    needs_human_callback: Mapped[bool] = mapped_column(default=False, index=True)
    human_callback_done: Mapped[bool] = mapped_column(default=False)
    human_callback_by: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
