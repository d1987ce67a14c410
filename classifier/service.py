"""The Classifier: case-type suggestions with calibrated scores, 大类, department and place for a text."""

from __future__ import annotations

import asyncio
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from classifier.address import Address, Gazetteer, extract_address
from classifier.linear import LinearModel
from classifier.schemas import AddressOut, ClassifyResult, Suggestion
from classifier.spec import DEFAULT_SPEC, ModelSpec
from classifier.store import load as store_load
from classifier.store import load_or_build
from classifier.text import han_count
from kb.service import Routing, Taxonomy

# Citizens' descriptions fit in a few hundred characters; beyond this the text is cut (and flagged).
MAX_CHARS = 1000
MIN_K = 3


class ClassifierError(Exception):
    """Base of the classifier's own errors."""


class ModelNotReady(ClassifierError):
    """The model is still loading (or failed to load)."""


@dataclass(slots=True)
class _Screened:
    text: str
    reason: str | None
    usable: bool


def _screen(text: object) -> _Screened:
    """Decide what of the input can be classified and why not."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, not {type(text).__name__}")
    text = text.strip()
    long = len(text) > MAX_CHARS
    # Cut before normalising: a megabyte of pasted text must cost no more than a long description.
    clean = unicodedata.normalize("NFKC", text[: MAX_CHARS * 4]).strip()
    if not clean:
        return _Screened("", "empty text", False)
    if han_count(clean) == 0:
        return _Screened("", "no Chinese text to classify", False)
    if long and len(clean) > MAX_CHARS or len(text) > MAX_CHARS * 4:
        return _Screened(clean[:MAX_CHARS], f"text longer than {MAX_CHARS} characters: only the start was used",
                         True)
    return _Screened(clean, None, True)


@dataclass(slots=True)
class Classifier:
    """Suggests case types for citizens' texts; thread-safe, predictions take about a millisecond."""

    model: LinearModel
    taxonomy: Taxonomy
    routing: Routing
    gazetteer: Gazetteer
    review_threshold: float = 0.5
    _majors: list[str] = field(init=False, repr=False)
    _major_of: np.ndarray = field(init=False, repr=False)
    _major_names: dict[str, str] = field(init=False, repr=False)
    _col: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Precompute which 大类 each model class sums into."""
        majors: dict[str, int] = {}
        of = []
        for code in self.model.classes:
            case_type = self.taxonomy.types.get(code)
            major = case_type.major_code if case_type else code[:2]
            of.append(majors.setdefault(major, len(majors)))
        self._majors = list(majors)
        self._major_of = np.asarray(of, dtype=np.int64)
        self._major_names = self.taxonomy.majors
        self._col = {code: j for j, code in enumerate(self.model.classes)}

    @classmethod
    def load(cls, *, var_dir: Path | None = None, review_threshold: float | None = None,
             taxonomy: Taxonomy | None = None, routing: Routing | None = None, build: bool = True,
             spec: ModelSpec = DEFAULT_SPEC) -> Classifier:
        """Load the cached model for the current data, training it first when missing (unless build=False).

        Without arguments the var dir, review threshold and taxonomy come from the INTAKE_* settings.
        """
        if var_dir is None or review_threshold is None or taxonomy is None:
            from core.settings import get_settings

            settings = get_settings()
            var_dir = var_dir if var_dir is not None else settings.var_dir
            if review_threshold is None:
                review_threshold = settings.classifier_review_threshold
            if taxonomy is None:
                taxonomy = Taxonomy.load(settings.kb_taxonomy_file, extra=settings.kb_taxonomy_extra_file)
        model, _ = load_or_build(var_dir=var_dir, spec=spec, build=build)
        return cls(model=model, taxonomy=taxonomy, routing=routing or Routing.load(), gazetteer=Gazetteer.load(),
                   review_threshold=review_threshold)

    @classmethod
    def from_file(cls, path: Path, *, review_threshold: float, taxonomy: Taxonomy,
                  routing: Routing | None = None) -> Classifier:
        """Serve a given model file (the previous model, while the one for new labels is being trained)."""
        return cls(model=store_load(path), taxonomy=taxonomy, routing=routing or Routing.load(),
                   gazetteer=Gazetteer.load(), review_threshold=review_threshold)

    @property
    def model_id(self) -> str:
        """Identify the trained model (derived from the hash of its data and code)."""
        return self.model.model_id

    def suggest(self, text: str, *, district: str | None = None, k: int = 5) -> ClassifyResult:
        """Return the top-k case types and the rest of the answer for one text."""
        return self.batch([text], districts=[district], k=k)[0]

    async def suggest_async(self, text: str, *, district: str | None = None, k: int = 5) -> ClassifyResult:
        """Run `suggest` in a worker thread so the event loop never waits on the model."""
        return await asyncio.to_thread(self.suggest, text, district=district, k=k)

    def batch(self, texts: Sequence[str], *, districts: Sequence[str | None] | None = None,
              k: int = 5) -> list[ClassifyResult]:
        """Classify many texts with one vectorised prediction."""
        k = max(MIN_K, min(int(k), len(self.model.classes)))
        screened = [_screen(t) for t in texts]
        usable = [i for i, s in enumerate(screened) if s.usable]
        proba = self.model.predict_proba([screened[i].text for i in usable]) if usable else np.zeros((0, 0))
        rows = dict(zip(usable, proba, strict=True))
        results = []
        for i, item in enumerate(screened):
            district = districts[i] if districts is not None and i < len(districts) else None
            results.append(self._answer(item, rows.get(i), district=district, k=k))
        return results

    def _answer(self, item: _Screened, proba: np.ndarray | None, *, district: str | None, k: int) -> ClassifyResult:
        address = extract_address(item.text, gazetteer=self.gazetteer) if item.text else None
        district_code = self.gazetteer.district_code(district) if district else None
        if district and district_code is None:
            district_code = district  # a code or name the gazetteer does not know: let the routing decide
        if district_code is None and address is not None:
            district_code = address.district_code
        base = ClassifyResult(district=self.gazetteer.district_names.get(district_code or "", district_code),
                              address=_address_out(address), model_id=self.model_id,
                              needs_review=True, reason=item.reason)
        if proba is None:
            return base
        suggestions = self._ranked(proba, k)
        if not suggestions:
            return base.model_copy(update={"reason": "the model knows none of the taxonomy's codes"})
        major_code, major_score = self._major(proba)
        top = self.taxonomy.types[suggestions[0].code]
        department = self.routing.department_for(top, district=district_code)
        low = float(proba[self._col[top.code]]) < self.review_threshold
        reason = item.reason
        if low:
            reason = (reason + "; " if reason else "") + (
                f"low confidence ({suggestions[0].score:.2f} < {self.review_threshold:.2f})")
        return base.model_copy(update={
            "suggestions": suggestions,
            "major": major_code,
            "major_name": self._major_names.get(major_code) if major_code else None,
            "major_score": major_score,
            "department": department,
            "department_name": self.routing.department_name(department),
            "needs_review": low or item.reason is not None,
            "reason": reason,
        })

    def _ranked(self, proba: np.ndarray, k: int) -> list[Suggestion]:
        out: list[Suggestion] = []
        for j in np.argsort(-proba, kind="stable"):
            code = self.model.classes[int(j)]
            case_type = self.taxonomy.types.get(code)
            if case_type is None:
                continue  # a city taxonomy without this national code
            out.append(Suggestion(code=code, name=case_type.name, score=_score(float(proba[j]))))
            if len(out) == k:
                break
        return out

    def _major(self, proba: np.ndarray) -> tuple[str | None, float | None]:
        if not self._majors:
            return None, None
        totals = np.bincount(self._major_of, weights=proba, minlength=len(self._majors))
        best = int(totals.argmax())
        return self._majors[best], _score(float(totals[best]))


def _score(value: float) -> float:
    return round(min(1.0, max(0.0, value)), 4)


def _address_out(address: Address | None) -> AddressOut | None:
    if address is None:
        return None
    return AddressOut(text=address.text, district=address.district, district_code=address.district_code,
                      lat=address.lat, lng=address.lng)
