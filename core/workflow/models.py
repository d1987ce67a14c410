"""Tables of the built-in workflow (the platform side, for centres without their own)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.cases.models import Step
from core.db import Base, utcnow
from core.models import str_enum


class WorkflowCase(Base):
    """A case as the built-in workflow sees it: number, department, step, deadline."""

    __tablename__ = "wf_cases"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    submit_key: Mapped[str] = mapped_column(String(128), unique=True)
    case_type_code: Mapped[str] = mapped_column(String(8))
    department: Mapped[str | None] = mapped_column(String(64))
    urgent: Mapped[bool] = mapped_column(default=False)
    step: Mapped[Step] = mapped_column(str_enum(Step))
    seq: Mapped[int] = mapped_column(default=0)
    deadline_at: Mapped[dt.datetime | None]
    send_backs: Mapped[int] = mapped_column(default=0)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WorkflowEvent(Base):
    """One transition of a built-in workflow case, numbered per case."""

    __tablename__ = "wf_events"
    __table_args__ = (UniqueConstraint("wf_case_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    wf_case_id: Mapped[int] = mapped_column(ForeignKey("wf_cases.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int]
    step: Mapped[Step] = mapped_column(str_enum(Step))
    actor: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    attachments: Mapped[list[Any]] = mapped_column(default=list)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
