"""Cross-validation, held-out reports and the model comparison behind the choice in docs/classifier.md."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score, precision_recall_fscore_support
from sklearn.model_selection import StratifiedKFold

from classifier.corpus import Example
from classifier.model import SEED, _quiet_sklearn, build_pipeline, fit, group_folds
from classifier.spec import ModelSpec
from classifier.text import normalise_many
from kb.service import Routing, Taxonomy

Split = Literal["scenario", "random", "voice"]
VOICES = ("call", "wechat", "order", "caption")
NEAR_DUPLICATE = 0.6


@dataclass(slots=True)
class Metrics:
    """Accuracy, top-3, macro-F1 and single-text latency of one evaluation."""

    accuracy: float
    top3: float
    macro_f1: float
    n: int
    latency_ms: float | None = None
    seconds: float = 0.0

    def row(self) -> str:
        """Render as a table row fragment."""
        latency = f"{self.latency_ms:.2f}" if self.latency_ms is not None else "–"
        return f"{self.accuracy:.3f} | {self.top3:.3f} | {self.macro_f1:.3f} | {latency}"


@dataclass(slots=True)
class ClassResult:
    """Precision, recall and F1 of one case type on the held-out part."""

    code: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(slots=True)
class Report:
    """A held-out evaluation with the details an operator-facing decision needs."""

    metrics: Metrics
    per_class: list[ClassResult] = field(default_factory=list)
    confused: list[tuple[str, str, int]] = field(default_factory=list)
    per_voice: dict[str, float] = field(default_factory=dict)
    review_threshold: float = 0.5
    auto_share: float = 0.0
    auto_accuracy: float = 0.0
    expected_calibration_error: float = 0.0
    major_accuracy: float = 0.0
    department_accuracy: float = 0.0


def leak_groups(examples: Sequence[Example], *, threshold: float = NEAR_DUPLICATE) -> list[str]:
    """Merge each example's scenario group with its near-duplicates (char-bigram cosine ≥ threshold)."""
    parent = list(range(len(examples)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    first: dict[str, int] = {}
    for i, e in enumerate(examples):
        key = e.group or f"#{i}"
        if key in first:
            parent[find(i)] = find(first[key])
        else:
            first[key] = i
    vectors = TfidfVectorizer(analyzer="char", ngram_range=(2, 3), sublinear_tf=True).fit_transform(
        normalise_many(e.text for e in examples))
    sims = (vectors @ vectors.T).tocoo()
    for i, j, v in zip(sims.row, sims.col, sims.data, strict=True):
        if i < j and v >= threshold:
            parent[find(int(i))] = find(int(j))
    return [str(find(i)) for i in range(len(examples))]


def splits(examples: Sequence[Example], *, split: Split = "scenario",
           n_splits: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test index pairs for the chosen way of holding data out.

    Supplement texts are always trained on and never tested: they were written after looking at the
    corpus's errors, so testing on them would flatter the model.
    """
    folds = _splits(examples, split=split, n_splits=n_splits)
    extra = [i for i, e in enumerate(examples) if e.source == "supplement"]
    if not extra:
        return folds
    out = []
    for train, test in folds:
        add = extra
        if split == "voice":
            # The held-out voice stays unseen: no supplement text written in it either.
            held = {examples[int(i)].voice for i in test}
            add = [i for i in extra if examples[i].voice not in held]
        out.append((np.union1d(train, np.asarray(add, dtype=np.int64)),
                    np.setdiff1d(test, np.asarray(extra, dtype=np.int64))))
    return out


def _splits(examples: Sequence[Example], *, split: Split, n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    codes = [e.code for e in examples]
    if split == "random":
        counts = Counter(codes)
        k = max(2, min(n_splits, min(counts.values())))
        return list(StratifiedKFold(k, shuffle=True, random_state=SEED).split(np.zeros(len(codes)), codes))
    folds = group_folds(codes, leak_groups(examples), n_splits)
    if split == "scenario":
        return folds
    # Voice: within each grouped fold, test one voice and train without that voice, so both the
    # situation and the writing style are new to the model (n_splits × 4 splits, fold by fold).
    voices = np.array([e.voice for e in examples])
    out = []
    for train, test in folds:
        for voice in VOICES:
            held_out = test[voices[test] == voice]
            if len(held_out):
                out.append((train[voices[train] != voice], held_out))
    return out


def _scores(model: Any, texts: list[str]) -> np.ndarray:
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(texts))
    return np.asarray(model.predict_proba(texts))


def _latency_ms(model: Any, texts: Sequence[str]) -> float:
    timings = []
    for text in texts[:200]:
        started = time.perf_counter()
        _scores(model, [text])
        timings.append(time.perf_counter() - started)
    return float(np.median(timings) * 1000)


def out_of_fold(examples: Sequence[Example], *, spec: ModelSpec, folds: Sequence[tuple[np.ndarray, np.ndarray]],
                measure_latency: bool = True) -> tuple[np.ndarray, list[str], np.ndarray, float | None]:
    """Rank every test text with a model that never saw its fold; returns (scores, classes, tested, latency)."""
    classes = sorted({e.code for e in examples})
    index = {c: i for i, c in enumerate(classes)}
    texts = np.array([e.text for e in examples], dtype=object)
    codes = np.array([e.code for e in examples])
    scores = np.full((len(examples), len(classes)), -np.inf)
    tested = np.zeros(len(examples), dtype=bool)
    latency = None
    # Ranking needs no calibration: temperature scaling is monotonic, so top-k is that of the raw scores.
    uncalibrated = ModelSpec(**{**_spec_dict(spec), "calibration": "none"})
    for train, test in folds:
        with _quiet_sklearn():
            model = build_pipeline(uncalibrated).fit(list(texts[train]), list(codes[train]))
            fold_scores = _scores(model, list(texts[test]))
        cols = np.asarray([index[str(c)] for c in model.classes_], dtype=np.int64)
        scores[np.ix_(test, cols)] = fold_scores
        tested[test] = True
        if measure_latency and latency is None:
            latency = _latency_ms(model, list(texts[test]))
    return scores, classes, tested, latency


def _spec_dict(spec: ModelSpec) -> dict[str, Any]:
    return {f: getattr(spec, f) for f in spec.__dataclass_fields__}


def metrics_from(scores: np.ndarray, classes: Sequence[str], truth: Sequence[str]) -> tuple[float, float, float]:
    """Accuracy, top-3 accuracy and macro-F1 of ranked scores."""
    order = np.argsort(-scores, axis=1, kind="stable")
    cls = np.asarray(classes)
    truth_arr = np.asarray(truth)
    pred = cls[order[:, 0]]
    top3 = np.mean([t in cls[o[:3]] for t, o in zip(truth_arr, order, strict=True)])
    labels = sorted(set(truth_arr))
    f1 = f1_score(truth_arr, pred, labels=labels, average="macro", zero_division=0)
    return float(np.mean(pred == truth_arr)), float(top3), float(f1)


def cross_validate(examples: Sequence[Example], *, spec: ModelSpec, split: Split = "scenario",
                   n_splits: int = 5) -> Metrics:
    """Evaluate a spec with k-fold cross-validation (grouped so paraphrases never straddle folds)."""
    started = time.perf_counter()
    folds = splits(examples, split=split, n_splits=n_splits)
    scores, classes, tested, latency = out_of_fold(examples, spec=spec, folds=folds)
    truth = [e.code for e, t in zip(examples, tested, strict=True) if t]
    acc, top3, f1 = metrics_from(scores[tested], classes, truth)
    return Metrics(acc, top3, f1, int(tested.sum()), latency, time.perf_counter() - started)


def holdout_report(examples: Sequence[Example], *, spec: ModelSpec, split: Split = "scenario",
                   review_threshold: float = 0.5, n_splits: int = 5) -> Report:
    """Train the calibrated model on all but one grouped fold and report on that fold in detail."""
    started = time.perf_counter()
    # The first grouped fold; for the voice split that is four train/test pairs, one per voice.
    parts = splits(examples, split=split, n_splits=n_splits)[: 4 if split == "voice" else 1]
    test = np.concatenate([t for _, t in parts])
    truth = np.array([examples[i].code for i in test])
    classes = sorted({e.code for e in examples})
    proba = np.zeros((len(test), len(classes)))
    row = 0
    latency = 0.0
    for train, held_out in parts:
        model = fit([examples[i] for i in train], spec=spec)
        texts = [examples[i].text for i in held_out]
        cols = [classes.index(c) for c in model.classes]
        proba[row : row + len(held_out), cols] = model.predict_proba(texts)
        row += len(held_out)
        latency = _proba_latency(model, texts)
    acc, top3, f1 = metrics_from(proba, classes, list(truth))
    pred = np.asarray(classes)[proba.argmax(axis=1)]
    labels = sorted(set(truth))
    p, r, f, s = precision_recall_fscore_support(truth, pred, labels=labels, zero_division=0)
    per_class = [ClassResult(c, float(pi), float(ri), float(fi), int(si))
                 for c, pi, ri, fi, si in zip(labels, p, r, f, s, strict=True)]
    confused = Counter((str(t), str(q)) for t, q in zip(truth, pred, strict=True) if t != q)
    voices = np.array([examples[i].voice for i in test])
    per_voice = {v: float(np.mean(pred[voices == v] == truth[voices == v])) for v in VOICES if (voices == v).any()}
    top = proba.max(axis=1)
    auto = top >= review_threshold
    routing, taxonomy = Routing.load(), Taxonomy.load()

    def department(code: str) -> str | None:
        case_type = taxonomy.get(code)
        return routing.department_for(case_type) if case_type else None

    same_department = [department(str(t)) == department(str(q)) for t, q in zip(truth, pred, strict=True)]
    return Report(
        metrics=Metrics(acc, top3, f1, len(test), latency, time.perf_counter() - started),
        per_class=per_class,
        confused=[(a, b, n) for (a, b), n in confused.most_common(15)],
        per_voice=per_voice,
        review_threshold=review_threshold,
        auto_share=float(auto.mean()),
        auto_accuracy=float(np.mean(pred[auto] == truth[auto])) if auto.any() else 0.0,
        expected_calibration_error=_ece(top, pred == truth),
        # Codes start with their 大类; a wrong 小类 often still goes to the right department.
        major_accuracy=float(np.mean([str(t)[:2] == str(q)[:2] for t, q in zip(truth, pred, strict=True)])),
        department_accuracy=float(np.mean(same_department)),
    )


def _proba_latency(model: Any, texts: Sequence[str]) -> float:
    timings = []
    for text in texts[:200]:
        started = time.perf_counter()
        model.predict_proba([text])
        timings.append(time.perf_counter() - started)
    return float(np.median(timings) * 1000)


def _ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: how far the stated confidence is from the observed accuracy."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mask = (confidence > lo) & (confidence <= hi)
        if mask.any():
            total += mask.mean() * abs(float(confidence[mask].mean()) - float(correct[mask].mean()))
    return total


# The grid of the comparison table in docs/classifier.md.
COMPARISON: tuple[ModelSpec, ...] = (
    ModelSpec(features="char", algorithm="svm", char_ngrams=(1, 2), min_df=1, c=1.0),
    ModelSpec(features="char", algorithm="svm", char_ngrams=(1, 3), min_df=2, c=0.5),
    ModelSpec(features="word", algorithm="svm", min_df=2, c=0.5),
    ModelSpec(features="both", algorithm="svm", char_ngrams=(1, 2), min_df=2, c=1.0),
    ModelSpec(features="both", algorithm="svm", char_ngrams=(1, 3), min_df=2, c=0.5),
    ModelSpec(features="char", algorithm="logreg", char_ngrams=(1, 2), min_df=2, c=10.0),
    ModelSpec(features="char", algorithm="cnb", char_ngrams=(1, 2), min_df=2),
    ModelSpec(features="char", algorithm="cnb", char_ngrams=(1, 3), min_df=2),
    ModelSpec(features="word", algorithm="cnb", min_df=2),
    ModelSpec(features="both", algorithm="cnb", char_ngrams=(1, 3), min_df=2),
)


def compare(examples: Sequence[Example], *, specs: Sequence[ModelSpec] | None = None, split: Split = "scenario",
            n_splits: int = 5) -> list[tuple[ModelSpec, Metrics]]:
    """Cross-validate every spec (default: the COMPARISON grid) on the same folds."""
    return [(spec, cross_validate(examples, spec=spec, split=split, n_splits=n_splits))
            for spec in (specs if specs is not None else COMPARISON)]

