"""Tables of the open intake API: client keys, requests received, alarm incidents, webhook deliveries, rates."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.cases.models import DraftStatus
from core.db import Base, utcnow
from core.models import str_enum


class Scope(enum.StrEnum):
    """What an API key may do."""

    OPEN311 = "open311"  # submit Open311 requests and read its own
    READ_ALL = "read_all"  # read every request that came in through the open API
    TRANSFER_12345 = "12345"  # deliver 12345 work orders
    ALARM = "alarm"  # raise machine alarms


class RequestKind(enum.StrEnum):
    """Which door of the open API a request came through."""

    OPEN311 = "open311"
    TRANSFER_12345 = "12345"
    ALARM = "alarm"


class DeliveryStatus(enum.StrEnum):
    """Life of one outbound webhook or callback."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class ApiClient(Base):
    """A third-party system with an API key (stored hashed), its limits and its webhook subscription."""

    __tablename__ = "open311_clients"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    contact: Mapped[str | None] = mapped_column(String(255))
    key_prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    rate_per_minute: Mapped[int] = mapped_column(default=60)
    quota_per_day: Mapped[int] = mapped_column(default=5000)
    active: Mapped[bool] = mapped_column(default=True)
    # Signs every webhook and 12345 callback to this client; shown once at creation or rotation.
    signing_secret: Mapped[str] = mapped_column(String(128))
    webhook_url: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None]


class ServiceRequest(Base):
    """One report received through the open API, linked to the draft (and so to the case) it became."""

    __tablename__ = "open311_requests"
    __table_args__ = (
        UniqueConstraint("client_id", "kind", "external_id"),
        Index("ix_open311_requests_client_created", "client_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("open311_clients.id"))
    kind: Mapped[RequestKind] = mapped_column(str_enum(RequestKind))
    draft_id: Mapped[int] = mapped_column(ForeignKey("draft_cases.id", ondelete="CASCADE"), unique=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    # The client's own id (Idempotency-Key, 12345 order id, alarm incident key); repeats map to this row.
    external_id: Mapped[str] = mapped_column(String(128))
    service_code: Mapped[str | None] = mapped_column(String(8))
    description: Mapped[str] = mapped_column(Text, default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    email: Mapped[str | None] = mapped_column(String(255))
    first_name: Mapped[str | None] = mapped_column(String(64))
    last_name: Mapped[str | None] = mapped_column(String(64))
    device_id: Mapped[str | None] = mapped_column(String(128))
    account_id: Mapped[str | None] = mapped_column(String(128))
    external_category: Mapped[str | None] = mapped_column(String(128))
    callback_url: Mapped[str | None] = mapped_column(String(1024))
    due_at: Mapped[dt.datetime | None]
    # The draft status last seen by the closure sweep (rejections and answers have no workflow step).
    seen_draft_status: Mapped[DraftStatus] = mapped_column(str_enum(DraftStatus), default=DraftStatus.PENDING_REVIEW)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AlarmIncident(Base):
    """One ongoing alarm (same source, type and place): repeats raise the counter instead of new drafts."""

    __tablename__ = "open311_alarm_incidents"
    __table_args__ = (UniqueConstraint("client_id", "alarm_key", "generation"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("open311_clients.id"))
    request_id: Mapped[int] = mapped_column(ForeignKey("open311_requests.id", ondelete="CASCADE"), unique=True)
    alarm_key: Mapped[str] = mapped_column(String(64))
    generation: Mapped[int] = mapped_column(default=1)
    source: Mapped[str] = mapped_column(String(64))
    alarm_type: Mapped[str] = mapped_column(String(64))
    place: Mapped[str] = mapped_column(String(255))
    count: Mapped[int] = mapped_column(default=1)
    first_at: Mapped[dt.datetime]
    last_at: Mapped[dt.datetime]
    last_value: Mapped[str | None] = mapped_column(String(64))
    unit: Mapped[str | None] = mapped_column(String(16))
    level: Mapped[str | None] = mapped_column(String(16))
    resolved_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookDelivery(Base):
    """One signed outbound message (status change, 12345 result), delivered through the outbox."""

    __tablename__ = "open311_deliveries"
    __table_args__ = (Index("ix_open311_deliveries_client_created", "client_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(128), unique=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("open311_clients.id"))
    request_id: Mapped[int | None] = mapped_column(ForeignKey("open311_requests.id", ondelete="CASCADE"),
                                                   index=True)
    event: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(1024))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[DeliveryStatus] = mapped_column(str_enum(DeliveryStatus), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[dt.datetime | None]


class DeliveryAttempt(Base):
    """One try of a delivery: when, what the receiver answered, how long it took."""

    __tablename__ = "open311_delivery_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("open311_deliveries.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(String(255))
    duration_ms: Mapped[int] = mapped_column(default=0)


class RateCounter(Base):
    """Requests of one client in one minute (`m…`) or local day (`d…`), shared by every process."""

    __tablename__ = "open311_rate_counters"

    client_id: Mapped[int] = mapped_column(ForeignKey("open311_clients.id", ondelete="CASCADE"), primary_key=True)
    window: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(default=0)
