"""Features, training and calibration with scikit-learn, and the export to the numpy-only LinearModel."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sklearn
from sklearn.base import ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.naive_bayes import ComplementNB
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVC

from classifier.corpus import Example
from classifier.linear import LinearModel, TextFeatures
from classifier.spec import DEFAULT_SPEC, ModelSpec
from classifier.text import normalise_many, tokenize

SEED = 0



def _vectorizer(spec: ModelSpec) -> Any:
    char = TfidfVectorizer(analyzer="char", ngram_range=spec.char_ngrams, sublinear_tf=True, min_df=spec.min_df,
                           lowercase=False, dtype=np.float32)
    # A module-level tokenizer keeps the pipeline picklable; token_pattern=None keeps one-character words.
    word = TfidfVectorizer(tokenizer=tokenize, token_pattern=None, lowercase=False, ngram_range=spec.word_ngrams,
                           sublinear_tf=True, min_df=max(spec.min_df, 2), dtype=np.float32)
    if spec.features == "char":
        return char
    if spec.features == "word":
        return word
    return FeatureUnion([("char", char), ("word", word)])


def _estimator(spec: ModelSpec) -> ClassifierMixin:
    if spec.algorithm == "svm":
        return LinearSVC(C=spec.c, class_weight=spec.class_weight, random_state=SEED)
    if spec.algorithm == "logreg":
        return LogisticRegression(C=spec.c, class_weight=spec.class_weight, max_iter=1000, random_state=SEED)
    return ComplementNB(alpha=spec.nb_alpha)


def build_pipeline(spec: ModelSpec = DEFAULT_SPEC) -> Pipeline:
    """Return the unfitted pipeline: normalise → TF-IDF features → linear classifier."""
    return Pipeline([
        ("normalise", FunctionTransformer(normalise_many)),
        ("features", _vectorizer(spec)),
        ("classifier", _estimator(spec)),
    ])


def group_folds(codes: Sequence[str], groups: Sequence[str], n_splits: int,
                seed: int = SEED) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds that never split a group (one scenario in several voices, a near-duplicate pair)."""
    counts = Counter(codes)
    n_splits = max(2, min(n_splits, max(counts.values())))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    dummy = np.zeros(len(codes))
    with _quiet_sklearn():
        return list(splitter.split(dummy, np.asarray(codes), np.asarray(groups)))


@contextlib.contextmanager
def _quiet_sklearn() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        # Rare classes (5-16 texts, or one correction) trigger "least populated class" warnings by design.
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        yield


@dataclass(slots=True)
class TrainedModel:
    """A fitted sklearn estimator with probabilities, its numpy export when possible, and its provenance."""

    estimator: Any
    classes: list[str]
    spec: ModelSpec
    meta: dict[str, Any] = field(default_factory=dict)
    linear: LinearModel | None = None

    @property
    def model_id(self) -> str:
        """Identify the model."""
        return str(self.meta.get("model_id", "adhoc"))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Return one row of class probabilities per text, columns in `classes` order."""
        if self.linear is not None:
            return self.linear.predict_proba(texts)
        proba: np.ndarray = self.estimator.predict_proba(list(texts))
        return proba


def fit(examples: Sequence[Example], *, spec: ModelSpec = DEFAULT_SPEC, model_id: str = "adhoc") -> TrainedModel:
    """Train on the examples; probabilities come from calibration on grouped out-of-fold scores."""
    if not examples:
        raise ValueError("no training examples")
    started = time.perf_counter()
    texts = [e.text for e in examples]
    codes = [e.code for e in examples]
    pipeline = build_pipeline(spec)
    estimator: Any
    with _quiet_sklearn():
        if spec.calibration == "none" or spec.algorithm == "logreg":
            # Logistic regression is already a probability model; ComplementNB without calibration is raw.
            estimator = pipeline.fit(texts, codes)
        else:
            # Out-of-fold scores from grouped folds: calibrating on leaked paraphrases would make it overconfident.
            folds = group_folds(codes, [e.group or str(i) for i, e in enumerate(examples)], spec.calibration_folds)
            estimator = CalibratedClassifierCV(pipeline, method=spec.calibration, cv=folds, ensemble=False)
            estimator.fit(texts, codes)
    meta = {
        "model_id": model_id,
        "spec": spec.label(),
        "n_examples": len(examples),
        "sources": dict(sorted(Counter(e.source for e in examples).items())),
        "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "train_seconds": round(time.perf_counter() - started, 1),
        "sklearn": sklearn.__version__,
    }
    model = TrainedModel(estimator=estimator, classes=[str(c) for c in estimator.classes_], spec=spec, meta=meta)
    model.linear = export(model, probe=texts[:: max(1, len(texts) // 200)])
    return model


def _linear_parts(pipeline: Pipeline) -> tuple[list[TextFeatures], Any] | None:
    features = pipeline.named_steps["features"]
    vectorizers = ([(n, v) for n, v in features.transformer_list] if isinstance(features, FeatureUnion)
                   else [(features.analyzer if features.analyzer == "char" else "word", features)])
    if isinstance(features, FeatureUnion) and features.transformer_weights:
        return None
    parts: list[TextFeatures] = []
    offset = 0
    for _name, vec in vectorizers:
        if not isinstance(vec, TfidfVectorizer) or vec.norm != "l2" or vec.lowercase or vec.stop_words:
            return None
        kind = "char" if vec.analyzer == "char" else "word"
        if kind == "word" and vec.tokenizer is not tokenize:
            return None
        terms = [""] * len(vec.vocabulary_)
        for term, j in vec.vocabulary_.items():
            terms[j] = term
        lo, hi = vec.ngram_range
        parts.append(TextFeatures(kind, (int(lo), int(hi)), terms, np.asarray(vec.idf_, dtype=np.float64),
                                  bool(vec.sublinear_tf), offset))
        offset += len(terms)
    return parts, pipeline.named_steps["classifier"]


def export(model: TrainedModel, *, probe: Sequence[str] = ("路边井盖碎了", "半夜施工太吵")) -> LinearModel | None:
    """Convert a TF-IDF + linear (+ temperature) model to numpy arrays, verified on the probe texts.

    Returns None for models that have no such form (ComplementNB, per-class sigmoid calibration).
    """
    estimator = model.estimator
    if isinstance(estimator, CalibratedClassifierCV):
        calibrated = estimator.calibrated_classifiers_
        if len(calibrated) != 1 or calibrated[0].method != "temperature":
            return None
        pipeline, beta = calibrated[0].estimator, float(calibrated[0].calibrators[0].beta_)
    elif isinstance(estimator, Pipeline) and isinstance(estimator.named_steps["classifier"], LogisticRegression):
        pipeline, beta = estimator, 1.0
    else:
        return None
    found = _linear_parts(pipeline)
    if found is None:
        return None
    parts, clf = found
    if not isinstance(clf, LinearSVC | LogisticRegression) or clf.coef_.shape[0] != len(model.classes):
        return None
    linear = LinearModel(
        classes=list(model.classes),
        parts=parts,
        # float32 halves the file and the load time; rankings and probabilities move by ~1e-7.
        weights=np.ascontiguousarray(np.asarray(clf.coef_, dtype=np.float32).T),
        intercept=np.asarray(clf.intercept_, dtype=np.float64),
        beta=beta,
        meta=dict(model.meta),
    )
    expected = estimator.predict_proba(list(probe))
    if not np.allclose(linear.predict_proba(probe), expected, atol=1e-5):
        raise RuntimeError("the numpy export does not reproduce the sklearn pipeline")
    return linear
