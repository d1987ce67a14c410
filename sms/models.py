"""SMS sends with their parts and receipts, and the numbers we text (opt-outs, the per-number lock)."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, utcnow
from core.models import str_enum


class SmsStatus(enum.StrEnum):
    """Life of one SMS: pending → submitting → submitted → delivered / failed, or skipped (opted out)."""

    PENDING = "pending"
    SUBMITTING = "submitting"  # an attempt is in flight, or its answer was lost
    SUBMITTED = "submitted"  # the gateway accepted it
    DELIVERED = "delivered"
    FAILED = "failed"
    SKIPPED = "skipped"


FINAL_STATUSES = (SmsStatus.SUBMITTED, SmsStatus.DELIVERED, SmsStatus.FAILED, SmsStatus.SKIPPED)


class SmsRecipient(Base):
    """A number we text: its opt-out, and the row locked while a send to it is reserved (rate limits)."""

    __tablename__ = "sms_recipients"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(32), unique=True)
    opted_out_at: Mapped[dt.datetime | None]
    opt_out_via: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SmsSend(Base):
    """One SMS owed to a number: a case notice or a free text, sent at most once through the gateway."""

    __tablename__ = "sms_sends"
    __table_args__ = (Index("ix_sms_sends_phone_sent", "phone", "sent_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)
    # What the gateway sees (OutId, SessionContext, dlr-url): the notice key, or a hash of the caller's key.
    reference: Mapped[str] = mapped_column(String(64), unique=True)
    notification_id: Mapped[int | None] = mapped_column(
        ForeignKey("notifications.id", ondelete="CASCADE"), index=True
    )
    phone: Mapped[str] = mapped_column(String(32))
    template: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    body: Mapped[str] = mapped_column(Text)
    parts: Mapped[int] = mapped_column(default=1)
    urgent: Mapped[bool] = mapped_column(default=False)
    # Only the confirmation of an opt-out itself is sent to a number that opted out.
    ignore_opt_out: Mapped[bool] = mapped_column(default=False)
    provider: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[SmsStatus] = mapped_column(str_enum(SmsStatus), default=SmsStatus.PENDING)
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(default=0)
    deferrals: Mapped[int] = mapped_column(default=0)
    not_before: Mapped[dt.datetime | None]
    defer_reason: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    first_attempt_at: Mapped[dt.datetime | None]
    attempt_started_at: Mapped[dt.datetime | None]
    # Set when an attempt may have reached the gateway: what the per-number rate limits count.
    sent_at: Mapped[dt.datetime | None]
    accepted_at: Mapped[dt.datetime | None]
    delivered_at: Mapped[dt.datetime | None]


class SmsPart(Base):
    """A gateway message id of a send (one per part where the gateway numbers parts, e.g. SMPP)."""

    __tablename__ = "sms_parts"
    __table_args__ = (UniqueConstraint("provider", "provider_message_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    send_id: Mapped[int] = mapped_column(ForeignKey("sms_sends.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    provider_message_id: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(default=1)
    status: Mapped[SmsStatus] = mapped_column(str_enum(SmsStatus), default=SmsStatus.SUBMITTED)
    code: Mapped[str | None] = mapped_column(String(32))


class SmsReceipt(Base):
    """A delivery report as received (gateways repeat them; they may also arrive before the send is recorded)."""

    __tablename__ = "sms_receipts"
    __table_args__ = (UniqueConstraint("provider", "provider_message_id", "outcome"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    provider_message_id: Mapped[str] = mapped_column(String(128))
    reference: Mapped[str | None] = mapped_column(String(128), index=True)
    send_id: Mapped[int | None] = mapped_column(ForeignKey("sms_sends.id", ondelete="CASCADE"), index=True)
    outcome: Mapped[str] = mapped_column(String(16))  # accepted | delivered | failed
    code: Mapped[str] = mapped_column(String(32))
    reported_at: Mapped[dt.datetime | None]
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    applied: Mapped[bool] = mapped_column(default=False)
