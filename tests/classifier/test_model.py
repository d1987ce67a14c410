"""Training: deterministic, picklable with the jieba branch, cached by content hash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classifier import store
from classifier.corpus import Example, record_correction
from classifier.linear import LinearModel
from classifier.model import fit
from classifier.spec import ModelSpec
from classifier.store import fingerprint, load_or_build
from classifier.text import normalise, tokenize

PROBES = ["路边井盖碎了", "半夜工地还在施工", "小区门口有人摆摊卖菜", "垃圾桶满了溢出来"]


def test_training_is_deterministic(small_corpus: list[Example]) -> None:
    first = fit(small_corpus).predict_proba(PROBES)
    second = fit(small_corpus).predict_proba(PROBES)
    assert np.array_equal(first, second)
    assert np.allclose(first.sum(axis=1), 1.0)


def test_small_model_learns(small_corpus: list[Example]) -> None:
    model = fit(small_corpus)
    best = [model.classes[i] for i in model.predict_proba(PROBES).argmax(axis=1)]
    assert best == ["01002", "08004", "09006", "06042"]
    assert len(model.classes) == 12


def test_export_reproduces_sklearn(small_corpus: list[Example], tmp_path: Path) -> None:
    for spec in (ModelSpec(), ModelSpec(features="both", char_ngrams=(1, 3), min_df=2),
                 ModelSpec(features="word", algorithm="logreg", c=10.0)):
        model = fit(small_corpus, spec=spec)
        assert model.linear is not None
        texts = [e.text for e in small_corpus[::7]] + PROBES + ["", "😀"]
        assert np.allclose(model.linear.predict_proba(texts), model.estimator.predict_proba(texts), atol=1e-6)
        model.linear.save(tmp_path / "m.npz")
        again = LinearModel.load(tmp_path / "m.npz")
        assert np.array_equal(again.predict_proba(texts), model.linear.predict_proba(texts))
        assert again.meta == model.meta and again.classes == model.classes


def test_sklearn_pipeline_pickles_with_jieba(small_corpus: list[Example]) -> None:
    import pickle

    model = fit(small_corpus, spec=ModelSpec(features="word", algorithm="cnb", min_df=2))
    assert model.linear is None  # no numpy form: evaluation only
    again = pickle.loads(pickle.dumps(model.estimator))
    assert np.allclose(again.predict_proba(PROBES), model.predict_proba(PROBES))


def test_other_algorithms_give_probabilities(small_corpus: list[Example]) -> None:
    for spec in (ModelSpec(algorithm="cnb"), ModelSpec(algorithm="svm", calibration="sigmoid")):
        proba = fit(small_corpus, spec=spec).predict_proba(PROBES)
        assert proba.shape == (4, 12) and np.all((proba >= 0) & (proba <= 1))


def test_normalise_strips_noise() -> None:
    text = normalise("市民来电反映：2024年3月5日上午9点，解放路12号门口井盖丢了，电话13812345678，请尽快处理。")
    assert "市民来电反映" not in text and "请尽快处理" not in text
    assert "13812345678" not in text and "12" not in text and "2024" not in text
    assert "井盖丢了" in text
    assert normalise("请尽快处理") == "请尽快处理"  # boilerplate alone is kept rather than emptied


def test_tokenizer_keeps_domain_words_and_single_characters() -> None:
    words = tokenize("雨水箅子被偷了，路灯也不亮，有人飞线充电")
    assert {"雨水箅子", "路灯", "飞线充电", "了"} <= set(words)
    assert "，" not in words


def test_cache_rebuilds_when_corrections_arrive(tmp_path: Path, small_corpus: list[Example],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "training_examples", lambda var_dir: list(small_corpus))
    first, trained = load_or_build(var_dir=tmp_path)
    assert trained
    again, trained_again = load_or_build(var_dir=tmp_path)
    assert not trained_again and again.model_id == first.model_id
    before = fingerprint(var_dir=tmp_path)
    assert record_correction("路灯一直不亮", "01037", var_dir=tmp_path, known_codes={"01037"})
    assert fingerprint(var_dir=tmp_path) != before
    rebuilt, trained_third = load_or_build(var_dir=tmp_path)
    assert trained_third and rebuilt.model_id != first.model_id
    assert len(list((tmp_path / "models").glob("classifier-*.npz"))) == 2
    assert not record_correction("", "01037", var_dir=tmp_path)
    assert not record_correction("路灯不亮", "99999", var_dir=tmp_path, known_codes={"01037"})


def test_no_build_without_permission(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="intake classifier build"):
        load_or_build(var_dir=tmp_path, build=False)


def test_read_only_var_dir_still_answers(tmp_path: Path, small_corpus: list[Example],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(store, "training_examples", lambda var_dir: list(small_corpus))
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    model, trained = load_or_build(var_dir=tmp_path)
    assert trained and model.predict_proba(PROBES).shape == (4, 12)
    assert not list(tmp_path.glob("models/*.npz"))
