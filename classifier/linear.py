"""The shipped model at prediction time: TF-IDF weights and linear coefficients in plain numpy.

Training uses scikit-learn (classifier/model.py); what is persisted and loaded is only arrays in an .npz
file, read with allow_pickle=False. Loading therefore imports no scikit-learn (fast start-up) and runs no
pickled code. Prediction reproduces the sklearn pipeline's probabilities (checked at export time).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classifier.text import normalise_many, tokenize

FORMAT = 2
_WHITE_SPACES = re.compile(r"\s\s+")


def char_ngrams(text: str, ngram_range: tuple[int, int]) -> list[str]:
    """Character n-grams exactly as TfidfVectorizer(analyzer="char") builds them."""
    text = _WHITE_SPACES.sub(" ", text)
    lo, hi = ngram_range
    grams = list(text) if lo == 1 else []
    for n in range(max(lo, 2), min(hi + 1, len(text) + 1)):
        grams.extend(text[i : i + n] for i in range(len(text) - n + 1))
    return grams


def word_ngrams(text: str, ngram_range: tuple[int, int]) -> list[str]:
    """jieba word n-grams exactly as TfidfVectorizer(tokenizer=tokenize) builds them."""
    tokens = tokenize(text)
    lo, hi = ngram_range
    grams = list(tokens) if lo == 1 else []
    for n in range(max(lo, 2), min(hi + 1, len(tokens) + 1)):
        grams.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return grams


@dataclass(slots=True)
class TextFeatures:
    """One TF-IDF block: its analyzer, vocabulary and IDF weights, placed at `offset` in the feature row."""

    kind: str  # "char" | "word"
    ngram_range: tuple[int, int]
    terms: list[str]
    idf: np.ndarray
    sublinear: bool
    offset: int
    vocabulary: dict[str, int] = field(init=False, repr=False)
    _analyze: Callable[[str, tuple[int, int]], list[str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Index the vocabulary and pick the analyzer."""
        self.vocabulary = {t: i for i, t in enumerate(self.terms)}
        self._analyze = char_ngrams if self.kind == "char" else word_ngrams

    def vector(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Return (feature indices, l2-normalised TF-IDF values) of one normalised text."""
        vocabulary = self.vocabulary
        counts = Counter(j for j in map(vocabulary.get, self._analyze(text, self.ngram_range)) if j is not None)
        if not counts:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        values = (np.log(tf) + 1.0 if self.sublinear else tf) * self.idf[idx]
        values /= np.sqrt(np.dot(values, values))
        return idx + self.offset, values


@dataclass(slots=True)
class LinearModel:
    """Classes, feature blocks, coefficients (features × classes) and the softmax temperature."""

    classes: list[str]
    parts: list[TextFeatures]
    weights: np.ndarray
    intercept: np.ndarray
    beta: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        """Identify the model (derived from the hash of its training data and code)."""
        return str(self.meta.get("model_id", "adhoc"))

    @property
    def n_examples(self) -> int:
        """Count the texts the model was trained on."""
        return int(self.meta.get("n_examples", 0))

    @property
    def sources(self) -> dict[str, int]:
        """Count the training texts per source (corpus files, cases, corrections)."""
        return dict(self.meta.get("sources", {}))

    def decision(self, texts: Sequence[str]) -> np.ndarray:
        """Return the linear scores, one row per text."""
        out = np.empty((len(texts), len(self.classes)))
        for row, text in enumerate(normalise_many(texts)):
            vectors = [part.vector(text) for part in self.parts]
            idx = np.concatenate([v[0] for v in vectors])
            if len(idx):
                values = np.concatenate([v[1] for v in vectors])
                out[row] = values @ self.weights[idx] + self.intercept
            else:
                out[row] = self.intercept
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Return class probabilities (softmax of the scores times the fitted inverse temperature)."""
        scores = self.beta * self.decision(texts)
        scores -= scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        return scores

    def describe(self) -> dict[str, Any]:
        """Summarise the model for status pages and the CLI."""
        return {**self.meta, "classes": len(self.classes), "features": int(self.weights.shape[0])}

    def save(self, path: Path) -> None:
        """Write the arrays and metadata (no pickles) to an .npz file."""
        arrays: dict[str, np.ndarray] = {
            "format": np.asarray([FORMAT]),
            "classes": np.asarray(self.classes),
            "weights": self.weights,
            "intercept": self.intercept,
            "beta": np.asarray([self.beta]),
            "meta": np.asarray([json.dumps(self.meta, ensure_ascii=False)]),
            "parts": np.asarray([json.dumps([{"kind": p.kind, "ngram_range": list(p.ngram_range),
                                              "sublinear": p.sublinear, "offset": p.offset}
                                             for p in self.parts])]),
        }
        for i, part in enumerate(self.parts):
            arrays[f"terms{i}"] = np.asarray(part.terms)
            arrays[f"idf{i}"] = part.idf
        with path.open("wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> LinearModel:
        """Read a file written by `save`."""
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"][0]) != FORMAT:
                raise ValueError(f"{path.name}: model format {int(data['format'][0])}, expected {FORMAT}")
            specs = json.loads(str(data["parts"][0]))
            parts = [TextFeatures(s["kind"], (int(s["ngram_range"][0]), int(s["ngram_range"][1])),
                                  data[f"terms{i}"].tolist(), data[f"idf{i}"], bool(s["sublinear"]), int(s["offset"]))
                     for i, s in enumerate(specs)]
            return cls(classes=[str(c) for c in data["classes"].tolist()], parts=parts,
                       weights=np.ascontiguousarray(data["weights"]), intercept=data["intercept"],
                       beta=float(data["beta"][0]), meta=json.loads(str(data["meta"][0])))
