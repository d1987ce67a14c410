"""Request and response bodies of the intake API."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from core.cases.models import STEP_LABELS, CaseState, DraftStatus, Step
from core.models import Channel
from core.phone import mask_phone

MAX_TEXT = 4000

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=255)]
CaseTypeCode = Annotated[str, StringConstraints(pattern=r"^\d{5}$")]


class MediaItem(BaseModel):
    """A photo, voice note or recording attached to a report."""

    model_config = ConfigDict(extra="forbid")

    kind: Annotated[str, StringConstraints(pattern=r"^(photo|voice|video|recording|file)$")] = "photo"
    url: Annotated[str, StringConstraints(max_length=1024)]
    mime: Annotated[str, StringConstraints(max_length=64)] | None = None


class Location(BaseModel):
    """Where the problem is: coordinates and/or an address."""

    model_config = ConfigDict(extra="forbid")

    lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    lng: Annotated[float, Field(ge=-180, le=180)] | None = None
    address: ShortText | None = None
    district: Annotated[str, StringConstraints(max_length=64)] | None = None


class Reporter(BaseModel):
    """Who reported; the phone is normalised to E.164 on intake."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
    phone: Annotated[str, StringConstraints(max_length=32)] | None = None
    openid: Annotated[str, StringConstraints(max_length=128)] | None = None


class DraftCreate(BaseModel):
    """A new report from any channel."""

    model_config = ConfigDict(extra="forbid")

    channel: Channel = Channel.API
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT)]
    source_key: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None, description="The channel's own id of the report (message id, order id); makes intake idempotent."
    )
    media: list[MediaItem] = Field(default_factory=list, max_length=20)
    location: Location | None = None
    reporter: Reporter | None = None
    suggested_type_code: CaseTypeCode | None = None
    suggested_department: ShortText | None = None
    suggestion_confidence: Annotated[float, Field(ge=0, le=1)] | None = None

    @field_validator("text")
    @classmethod
    def _no_control_chars(cls, value: str) -> str:
        """Drop control characters that break logs and SMS encodings, keep newlines."""
        return "".join(ch for ch in value if ch in "\n\t" or ch >= " ")


class DraftRead(BaseModel):
    """A draft as the console and API show it (the reporter's phone masked)."""

    id: int
    number: str
    channel: Channel
    status: DraftStatus
    text: str
    media: list[dict[str, Any]]
    location: Location
    reporter_name: str | None
    reporter_phone_masked: str | None
    suggested_type_code: str | None
    suggested_department: str | None
    suggestion_confidence: float | None
    reject_reason: str | None
    case_number: str | None = None
    created_at: dt.datetime


class AcceptDraft(BaseModel):
    """The operator's decision to file a case (立案)."""

    model_config = ConfigDict(extra="forbid")

    case_type_code: CaseTypeCode
    department: ShortText | None = None
    urgent: bool = False
    description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT)] | None = None
    location: Location | None = None


class RejectDraft(BaseModel):
    """不予立案 with a standard reason."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=255)]


class MergeDraft(BaseModel):
    """Merge a duplicate report into an existing case."""

    model_config = ConfigDict(extra="forbid")

    case_number: Annotated[str, StringConstraints(max_length=32)]


class AnswerDraft(BaseModel):
    """A consultation resolved on the spot (咨询), with the answer given."""

    model_config = ConfigDict(extra="forbid")

    answer: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT)]


class RatingCreate(BaseModel):
    """The citizen's satisfaction with a closed case."""

    model_config = ConfigDict(extra="forbid")

    score: Annotated[int, Field(ge=1, le=5)]
    comment: Annotated[str, StringConstraints(max_length=1000)] | None = None
    channel: Channel = Channel.SEAT


class CaseEventRead(BaseModel):
    """One timeline entry."""

    step: Step
    step_label: str
    at: dt.datetime
    actor: str | None
    note: str | None
    attachments: list[dict[str, Any]]


class CaseRead(BaseModel):
    """A case with its timeline."""

    id: int
    number: str | None
    state: CaseState
    step: Step
    step_label: str
    case_type_code: str
    case_type_name: str | None
    major_code: str
    department: str | None
    urgent: bool
    deadline_at: dt.datetime | None
    description: str
    address: str | None
    district: str | None
    channel: Channel
    rating_score: int | None
    created_at: dt.datetime
    closed_at: dt.datetime | None
    timeline: list[CaseEventRead]


def step_label(step: Step) -> str:
    """Return the Chinese name of a step."""
    return STEP_LABELS[step]


def masked(phone: str | None) -> str | None:
    """Mask a phone for output, keeping None as None."""
    return mask_phone(phone) if phone else None
