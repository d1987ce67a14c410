"""What the classifier answers: ranked case types, the 大类, the department and the place."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Suggestion(BaseModel):
    """One candidate case type with its calibrated probability."""

    model_config = ConfigDict(frozen=True)

    code: str
    name: str
    score: float = Field(ge=0.0, le=1.0)


class MajorSuggestion(BaseModel):
    """The most likely 大类: the sum of its 小类' probabilities."""

    model_config = ConfigDict(frozen=True)

    code: str
    name: str
    score: float = Field(ge=0.0, le=1.0)


class AddressOut(BaseModel):
    """The place phrase found in the text; lat/lng only when a gazetteer landmark matched."""

    model_config = ConfigDict(frozen=True)

    text: str
    district: str | None = None
    district_code: str | None = None
    lat: float | None = None
    lng: float | None = None


class ClassifyResult(BaseModel):
    """The full answer for one text (also one output line of `intake classify`, minus the id)."""

    suggestions: list[Suggestion] = Field(default_factory=list)
    major: str | None = None
    major_name: str | None = None
    major_score: float | None = None
    department: str | None = None
    department_name: str | None = None
    district: str | None = None
    address: AddressOut | None = None
    needs_review: bool = True
    reason: str | None = None
    model_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Render as plain JSON-ready data."""
        return self.model_dump(mode="json")
