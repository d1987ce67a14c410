"""Fixtures: the shipped model built once per run under tmp (or copied from a prebuilt cache), small corpora."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from classifier.corpus import Example, load_corpus
from classifier.service import Classifier
from classifier.store import cache_path, fingerprint, load_or_build
from core.settings import get_settings


@pytest.fixture(scope="session")
def model_var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A var dir holding the shipped model; a model already built in the working var dir is reused."""
    var_dir = tmp_path_factory.mktemp("classifier-var")
    target = cache_path(var_dir, fingerprint(var_dir=var_dir))
    prebuilt = cache_path(Path(os.environ.get("INTAKE_VAR_DIR", "var")), fingerprint(var_dir=None))
    if prebuilt.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(prebuilt, target)
    else:
        load_or_build(var_dir=var_dir)
    return var_dir


@pytest.fixture(scope="session")
def shipped(model_var_dir: Path) -> Classifier:
    """The classifier on the shipped model."""
    return Classifier.load(var_dir=model_var_dir, build=False)


@pytest.fixture(scope="session")
def corpus() -> list[Example]:
    """The shipped corpus."""
    return load_corpus()


@pytest.fixture(scope="session")
def small_corpus(corpus: list[Example]) -> list[Example]:
    """Twelve well-separated types, 16 texts each: trains in about a second."""
    codes = ["01002", "01037", "02014", "03001", "06010", "06028", "06042", "07001", "08004", "09006", "09011",
             "10001"]
    out: list[Example] = []
    for code in codes:
        out += [e for e in corpus if e.code == code][:16]
    return out


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model_var_dir: Path) -> Iterator[Path]:
    """Point the CLI's settings at a fresh var dir that already holds the shipped model."""
    var_dir = tmp_path / "var"
    shutil.copytree(model_var_dir, var_dir)
    monkeypatch.setenv("INTAKE_VAR_DIR", str(var_dir))
    get_settings.cache_clear()
    yield var_dir
    get_settings.cache_clear()
