"""Shared tables: citizens, operators, sessions, audit log, messages, outbox, idempotency records."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import Enum, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, utcnow


def str_enum(cls: type[enum.Enum]) -> Enum:
    """Store enums as their values in a VARCHAR, so adding a member needs no database type change."""
    return Enum(cls, native_enum=False, length=32, values_callable=lambda e: [m.value for m in e])


class ContactKind(enum.StrEnum):
    """How a citizen can be reached."""

    PHONE = "phone"
    WECHAT = "wechat"


class Role(enum.StrEnum):
    """Operator roles: 受理员, 值班长, admin."""

    AGENT = "agent"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


ROLE_LABELS = {Role.AGENT: "受理员", Role.SUPERVISOR: "值班长", Role.ADMIN: "管理员"}


class Channel(enum.StrEnum):
    """Where a report or message came from or goes to."""

    HOTLINE = "hotline"
    VOICEMAIL = "voicemail"
    WECHAT = "wechat"
    SMS = "sms"
    API = "api"
    TRANSFER_12345 = "12345"
    ALARM = "alarm"
    SEAT = "seat"


class Direction(enum.StrEnum):
    """Message direction from the centre's point of view."""

    INBOUND = "in"
    OUTBOUND = "out"


class OutboxStatus(enum.StrEnum):
    """Life of an outbox job."""

    PENDING = "pending"
    DONE = "done"
    DEAD = "dead"


class Citizen(Base):
    """A person who reports problems; identified through one or more contacts."""

    __tablename__ = "citizens"

    id: Mapped[int] = mapped_column(primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String(64))
    blocked: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    contacts: Mapped[list[CitizenContact]] = relationship(
        back_populates="citizen", lazy="selectin", cascade="all, delete-orphan"
    )


class CitizenContact(Base):
    """A phone (E.164) or WeChat openid that belongs to a citizen."""

    __tablename__ = "citizen_contacts"
    __table_args__ = (UniqueConstraint("kind", "value"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    citizen_id: Mapped[int] = mapped_column(ForeignKey("citizens.id", ondelete="CASCADE"), index=True)
    kind: Mapped[ContactKind] = mapped_column(str_enum(ContactKind))
    value: Mapped[str] = mapped_column(String(128))
    verified: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    citizen: Mapped[Citizen] = relationship(back_populates="contacts")


class Operator(Base):
    """A seat operator, shift leader or administrator of the centre."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(str_enum(Role), default=Role.AGENT)
    extension: Mapped[str | None] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[dt.datetime | None]


class OperatorSession(Base):
    """A server-side login session; the cookie carries only a random token whose hash is the key."""

    __tablename__ = "operator_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    operator: Mapped[Operator] = relationship(lazy="joined")


class AuditEntry(Base):
    """Who did what to which record, for supervision and privacy reviews."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ip: Mapped[str | None] = mapped_column(String(64))


class Message(Base):
    """An inbound or outbound message on any channel (WeChat, SMS, API), linked to what it concerns."""

    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("channel", "direction", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[Channel] = mapped_column(str_enum(Channel))
    direction: Mapped[Direction] = mapped_column(str_enum(Direction))
    external_id: Mapped[str | None] = mapped_column(String(128))
    citizen_id: Mapped[int | None] = mapped_column(ForeignKey("citizens.id", ondelete="SET NULL"), index=True)
    draft_id: Mapped[int | None] = mapped_column(ForeignKey("draft_cases.id", ondelete="SET NULL"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(32), default="text")
    body: Mapped[str] = mapped_column(Text, default="")
    media: Mapped[list[Any]] = mapped_column(default=list)
    seen_by_operator: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class OutboxJob(Base):
    """A durable unit of outgoing work (workflow submission, notice, webhook) retried until done."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    ordering_key: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[OutboxStatus] = mapped_column(str_enum(OutboxStatus), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    locked_by: Mapped[str | None] = mapped_column(String(64))
    locked_until: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    done_at: Mapped[dt.datetime | None]


class ProcessedKey(Base):
    """An idempotency record: a request or incoming event seen once, with the response it got."""

    __tablename__ = "processed_keys"
    __table_args__ = (UniqueConstraint("scope", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(128))
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Counter(Base):
    """Named counters for human-readable numbers (draft and case numbers per day)."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(default=0)
