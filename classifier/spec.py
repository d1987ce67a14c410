"""The choices that define a model (kept free of heavy imports: the service reads it at start-up)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Features = Literal["char", "word", "both"]
Algorithm = Literal["svm", "logreg", "cnb"]
Calibration = Literal["temperature", "sigmoid", "none"]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """The choices that define a model; the defaults are the winner of the cross-validation in the docs."""

    features: Features = "char"
    algorithm: Algorithm = "svm"
    calibration: Calibration = "temperature"
    char_ngrams: tuple[int, int] = (1, 2)
    word_ngrams: tuple[int, int] = (1, 2)
    min_df: int = 1
    c: float = 1.0
    nb_alpha: float = 0.3
    class_weight: Literal["balanced"] | None = "balanced"
    calibration_folds: int = 3

    def label(self) -> str:
        """Describe the spec in one short line (for tables and logs)."""
        char = "char{}-{}".format(*self.char_ngrams)
        word = "word{}-{}".format(*self.word_ngrams)
        ngrams = {"char": char, "word": word, "both": f"{char}+{word}"}[self.features]
        param = f"alpha={self.nb_alpha}" if self.algorithm == "cnb" else f"C={self.c}"
        calibration = f" {self.calibration}" if self.algorithm == "svm" and self.calibration != "none" else ""
        return f"{ngrams} {self.algorithm} {param}{calibration} min_df={self.min_df}"


DEFAULT_SPEC = ModelSpec()
