"""WeChat tables: the per-openid conversation, downloaded media, the shared access token, seen nonces."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, utcnow
from core.models import str_enum


class ConversationStep(enum.StrEnum):
    """Where a citizen's conversation with the bot stands."""

    IDLE = "idle"
    DESCRIBE = "describe"
    PHOTOS = "photos"
    LOCATION = "location"
    CONFIRM = "confirm"
    EDIT = "edit"
    RATING_COMMENT = "rating_comment"
    BIND_PHONE = "bind_phone"
    BIND_CODE = "bind_code"


# Steps of 我要上报: they time out, and 取消 drops the report being collected.
REPORT_STEPS = frozenset({
    ConversationStep.DESCRIBE, ConversationStep.PHOTOS, ConversationStep.LOCATION, ConversationStep.CONFIRM,
    ConversationStep.EDIT,
})


class Conversation(Base):
    """One row per openid: the step, the report being collected and the replies of recent messages.

    Every process reads and writes it under a row lock (plus a version check), so several app
    processes and restarts see one conversation; `recent` makes redelivered messages answer alike.
    """

    __tablename__ = "wechat_conversations"

    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    citizen_id: Mapped[int | None] = mapped_column(ForeignKey("citizens.id", ondelete="SET NULL"), index=True)
    step: Mapped[ConversationStep] = mapped_column(str_enum(ConversationStep), default=ConversationStep.IDLE)
    version: Mapped[int] = mapped_column(default=0)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    recent: Mapped[list[Any]] = mapped_column(default=list)
    step_expires_at: Mapped[dt.datetime | None]
    last_message_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class MediaStatus(enum.StrEnum):
    """Download state of a photo or voice note."""

    PENDING = "pending"
    STORED = "stored"
    FAILED = "failed"


class WeChatMedia(Base):
    """A photo or voice note a citizen sent, downloaded from the media API into media storage."""

    __tablename__ = "wechat_media"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_key: Mapped[str] = mapped_column(String(128), unique=True)
    openid: Mapped[str] = mapped_column(String(64), index=True)
    media_id: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[MediaStatus] = mapped_column(str_enum(MediaStatus), default=MediaStatus.PENDING)
    storage_key: Mapped[str | None] = mapped_column(String(255))
    mime: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(String(255))
    draft_id: Mapped[int | None] = mapped_column(ForeignKey("draft_cases.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    stored_at: Mapped[dt.datetime | None]


class AccessToken(Base):
    """The official account's access token, shared by every process (WeChat allows one live token)."""

    __tablename__ = "wechat_tokens"

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # WeChat asks for at least 512 characters of storage.
    token: Mapped[str] = mapped_column(String(1024))
    expires_at: Mapped[dt.datetime]
    refreshed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    forced_at: Mapped[dt.datetime | None]


class SeenNonce(Base):
    """A (timestamp, nonce) pair of a plaintext-mode callback and the body it signed, kept a few minutes.

    In plaintext mode the signature does not cover the body; a captured URL replayed with another body
    within the clock-skew window is refused because its nonce was already used for a different body.
    """

    __tablename__ = "wechat_nonces"

    key: Mapped[str] = mapped_column(String(96), primary_key=True)
    body_sha: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
