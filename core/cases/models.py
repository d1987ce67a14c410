"""Draft cases, accepted cases with their timeline, notifications, ratings and the points ledger."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, JSONType, utcnow
from core.models import Channel, Citizen, str_enum


class DraftStatus(enum.StrEnum):
    """A draft waits for a seat: draft → pending review → accepted / rejected / merged."""

    DRAFT = "draft"
    PENDING_REVIEW = "pending_review"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    MERGED = "merged"
    ANSWERED = "answered"


OPEN_DRAFT_STATUSES = (DraftStatus.DRAFT, DraftStatus.PENDING_REVIEW)


class Step(enum.StrEnum):
    """The 7-step loop of 数字城管 plus the citizen's rating."""

    COLLECT = "collect"
    REGISTER = "register"
    DISPATCH = "dispatch"
    HANDLE = "handle"
    FEEDBACK = "feedback"
    VERIFY = "verify"
    CLOSE = "close"
    RATE = "rate"


STEP_LABELS: dict[Step, str] = {
    Step.COLLECT: "信息采集",
    Step.REGISTER: "立案",
    Step.DISPATCH: "派遣",
    Step.HANDLE: "处置",
    Step.FEEDBACK: "反馈",
    Step.VERIFY: "核查",
    Step.CLOSE: "结案",
    Step.RATE: "评价",
}
STEP_ORDER: dict[Step, int] = {step: i for i, step in enumerate(Step)}

# The citizen hears about these steps; the rest are the departments' business.
CITIZEN_VISIBLE_STEPS: dict[Step, str] = {
    Step.REGISTER: "accepted",
    Step.DISPATCH: "dispatched",
    Step.CLOSE: "closed",
    Step.RATE: "rated",
}


class CaseState(enum.StrEnum):
    """Where the hand-off to the workflow stands."""

    SUBMITTING = "submitting"
    OPEN = "open"
    CLOSED = "closed"
    REJECTED = "rejected"


class NotificationStatus(enum.StrEnum):
    """Delivery state of a notice to a citizen."""

    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    SKIPPED = "skipped"


class DraftCase(Base):
    """A report waiting for a seat operator to accept, reject, merge or answer it."""

    __tablename__ = "draft_cases"
    __table_args__ = (Index("ix_draft_cases_status_created", "status", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(16), unique=True)
    channel: Mapped[Channel] = mapped_column(str_enum(Channel))
    status: Mapped[DraftStatus] = mapped_column(str_enum(DraftStatus), default=DraftStatus.DRAFT)
    source_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    raw_text: Mapped[str] = mapped_column(Text, default="")
    media: Mapped[list[Any]] = mapped_column(default=list)
    lat: Mapped[float | None]
    lng: Mapped[float | None]
    address: Mapped[str | None] = mapped_column(String(255))
    district: Mapped[str | None] = mapped_column(String(64))
    citizen_id: Mapped[int | None] = mapped_column(ForeignKey("citizens.id", ondelete="SET NULL"), index=True)
    reporter_name: Mapped[str | None] = mapped_column(String(64))
    suggested_type_code: Mapped[str | None] = mapped_column(String(8))
    suggested_department: Mapped[str | None] = mapped_column(String(64))
    suggestion_confidence: Mapped[float | None]
    reject_reason: Mapped[str | None] = mapped_column(String(255))
    # No foreign key: drafts and cases reference each other, and a cycle breaks table creation order.
    merged_into_case_id: Mapped[int | None] = mapped_column(index=True)
    claimed_by: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    claimed_at: Mapped[dt.datetime | None]
    handled_by: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    # What the operator has typed in the console so far, saved as they type (never lost on a reload).
    form_state: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    form_saved_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    citizen: Mapped[Citizen | None] = relationship(lazy="selectin")


class Case(Base):
    """An accepted report handed to the workflow; mirrors the workflow's step and deadline."""

    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(primary_key=True)
    draft_id: Mapped[int] = mapped_column(ForeignKey("draft_cases.id"), unique=True)
    submit_key: Mapped[str] = mapped_column(String(128), unique=True)
    number: Mapped[str | None] = mapped_column(String(32), unique=True)
    state: Mapped[CaseState] = mapped_column(str_enum(CaseState), default=CaseState.SUBMITTING)
    step: Mapped[Step] = mapped_column(str_enum(Step), default=Step.COLLECT)
    last_event_seq: Mapped[int] = mapped_column(default=0)
    case_type_code: Mapped[str] = mapped_column(String(8), index=True)
    major_code: Mapped[str] = mapped_column(String(2))
    department: Mapped[str | None] = mapped_column(String(64))
    urgent: Mapped[bool] = mapped_column(default=False)
    deadline_at: Mapped[dt.datetime | None]
    description: Mapped[str] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(String(255))
    district: Mapped[str | None] = mapped_column(String(64))
    lat: Mapped[float | None]
    lng: Mapped[float | None]
    channel: Mapped[Channel] = mapped_column(str_enum(Channel))
    citizen_id: Mapped[int | None] = mapped_column(ForeignKey("citizens.id", ondelete="SET NULL"), index=True)
    accepted_by: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    rating_score: Mapped[int | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    closed_at: Mapped[dt.datetime | None]
    events: Mapped[list[CaseEvent]] = relationship(
        back_populates="case", lazy="selectin", order_by="CaseEvent.id", cascade="all, delete-orphan"
    )


class CaseEvent(Base):
    """One entry of a case's timeline (a workflow step, a send-back, a rating)."""

    __tablename__ = "case_events"
    __table_args__ = (UniqueConstraint("case_id", "event_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    event_key: Mapped[str] = mapped_column(String(128))
    step: Mapped[Step] = mapped_column(str_enum(Step))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    attachments: Mapped[list[Any]] = mapped_column(default=list)
    case: Mapped[Case] = relationship(back_populates="events")


class Notification(Base):
    """A notice owed to a citizen about a case step; delivered through the outbox on its channel."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(128), unique=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    citizen_id: Mapped[int | None] = mapped_column(ForeignKey("citizens.id", ondelete="SET NULL"))
    channel: Mapped[Channel] = mapped_column(str_enum(Channel))
    address: Mapped[str] = mapped_column(String(128))
    template: Mapped[str] = mapped_column(String(32))
    step: Mapped[Step | None] = mapped_column(str_enum(Step))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    body: Mapped[str | None] = mapped_column(Text)
    status: Mapped[NotificationStatus] = mapped_column(
        str_enum(NotificationStatus), default=NotificationStatus.QUEUED
    )
    provider_message_id: Mapped[str | None] = mapped_column(String(128), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None]
    delivered_at: Mapped[dt.datetime | None]


class Rating(Base):
    """A citizen's satisfaction rating (1-5) of a closed case."""

    __tablename__ = "ratings"
    __table_args__ = (UniqueConstraint("case_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    citizen_id: Mapped[int | None] = mapped_column(ForeignKey("citizens.id", ondelete="SET NULL"))
    score: Mapped[int]
    channel: Mapped[Channel] = mapped_column(str_enum(Channel))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PointsEntry(Base):
    """One line of a citizen's points ledger; the balance is the sum."""

    __tablename__ = "points_ledger"
    __table_args__ = (UniqueConstraint("citizen_id", "reason", "case_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    citizen_id: Mapped[int] = mapped_column(ForeignKey("citizens.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"))
    delta: Mapped[int]
    reason: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
