"""The `WorkflowClient` port and the messages that cross it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.cases.models import Step


@dataclass(frozen=True, slots=True)
class Submission:
    """An accepted case as handed to the workflow; `submit_key` makes the hand-off idempotent."""

    submit_key: str
    case_type_code: str
    description: str
    channel: str
    reported_at: dt.datetime
    department: str | None = None
    urgent: bool = False
    address: str | None = None
    district: str | None = None
    lat: float | None = None
    lng: float | None = None
    media: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Receipt:
    """The workflow's answer to a submission: its case number and first step."""

    case_number: str
    step: Step
    seq: int
    at: dt.datetime
    department: str | None = None
    deadline_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A step change reported by the workflow; `seq` orders updates of one case."""

    case_number: str
    seq: int
    step: Step
    at: dt.datetime
    submit_key: str | None = None
    note: str | None = None
    actor: str | None = None
    department: str | None = None
    deadline_at: dt.datetime | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    rating: int | None = None


class WorkflowError(Exception):
    """The workflow could not take the request now; the outbox retries it later."""


class WorkflowRejected(WorkflowError):
    """The workflow refused the request for good (bad data); retrying cannot help."""


class WorkflowClient(Protocol):
    """What the intake needs from a workflow platform."""

    name: str

    async def submit(self, submission: Submission) -> Receipt:
        """Create the case, or return the existing one for the same submit key."""
        ...

    async def rate(self, *, case_number: str, score: int, comment: str | None, key: str) -> None:
        """Pass the citizen's rating of a closed case on to the workflow."""
        ...

    async def check(self) -> bool:
        """Tell whether the workflow answers right now."""
        ...
