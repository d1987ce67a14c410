"""The model cache: <var>/models/classifier-<hash>.npz, built from the training data on first use.

The hash covers the corpus, the city's imported cases, operators' corrections, the code of the
feature pipeline and the library versions, so any change yields a new model and a stale one is never
used. Loading reads numpy arrays only (no scikit-learn import, no pickle).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from classifier import text as text_module
from classifier.corpus import Example, load_corpus, load_extra, load_supplement, training_files
from classifier.linear import FORMAT, LinearModel
from classifier.spec import DEFAULT_SPEC, ModelSpec

log = logging.getLogger(__name__)

# Bump when the model changes in a way the hashed sources below would not show.
MODEL_VERSION = "2"
_PACKAGE = Path(__file__).parent
_SOURCES = ("text.py", "model.py", "linear.py", "spec.py", "corpus.py")
_build_lock = threading.Lock()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def fingerprint(*, var_dir: Path | None, spec: ModelSpec = DEFAULT_SPEC) -> str:
    """Hash everything the model depends on: training files, code, dictionary, library versions."""
    h = hashlib.sha256()
    for part in (MODEL_VERSION, str(FORMAT), _version("scikit-learn"), _version("numpy"),
                 repr(dataclasses.astuple(spec))):
        h.update(part.encode())
    paths = [_PACKAGE / name for name in _SOURCES] + [text_module.USERDICT, *training_files(var_dir)]
    for path in paths:
        if path.exists():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def cache_path(var_dir: Path, digest: str) -> Path:
    """Where the model for this fingerprint lives."""
    return var_dir / "models" / f"classifier-{digest[:16]}.npz"


def current_path(var_dir: Path, spec: ModelSpec = DEFAULT_SPEC) -> Path:
    """Where the model for the current data and code lives (whether built or not)."""
    return cache_path(var_dir, fingerprint(var_dir=var_dir, spec=spec))


def newest_cached(var_dir: Path) -> Path | None:
    """The most recently built model file, whatever data it was trained on (None when there is none)."""
    models = sorted((var_dir / "models").glob("classifier-*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    return models[0] if models else None


def training_examples(var_dir: Path | None) -> list[Example]:
    """The shipped corpus and supplement plus the city's imported cases and operators' corrections."""
    return load_corpus() + load_supplement() + load_extra(var_dir)


def save(model: LinearModel, path: Path) -> None:
    """Write atomically so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        model.save(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would lock out a service running as another user
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@lru_cache(maxsize=4)
def _load_cached(path: Path, mtime_ns: int) -> LinearModel:
    # Several apps in one process (tests, the CLI after a build) share one copy; a rewritten file has a
    # new mtime. The model is read-only after loading, so sharing it between threads is safe.
    return LinearModel.load(path)


def load(path: Path) -> LinearModel:
    """Read a cached model."""
    return _load_cached(path, path.stat().st_mtime_ns)


def load_or_build(*, var_dir: Path, spec: ModelSpec = DEFAULT_SPEC, build: bool = True,
                  force: bool = False) -> tuple[LinearModel, bool]:
    """Return the model for the current data and code, training and caching it first if needed.

    The second value tells whether this call trained the model.
    """
    digest = fingerprint(var_dir=var_dir, spec=spec)
    path = cache_path(var_dir, digest)
    if path.exists() and not force:
        return load(path), False
    if not build:
        raise FileNotFoundError(f"no classifier model built for the current data ({path.name}); "
                                "run `intake classifier build`")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writable = os.access(path.parent, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        # A read-only var dir still gets suggestions, at the price of training in every process.
        log.warning("%s is not writable: training the classifier without caching it", path.parent)
        return _train(var_dir, spec, digest), True
    with _build_lock, _file_lock(path.with_suffix(".lock")):
        # Another thread or process may have built it while we waited.
        if path.exists() and not force:
            return load(path), False
        log.info("training the case-type classifier (%s)", path.name)
        save(_train(var_dir, spec, digest), path)
        _remove_stale(path)
    return load(path), True


def _train(var_dir: Path, spec: ModelSpec, digest: str) -> LinearModel:
    from classifier.model import fit  # scikit-learn is needed only to train

    trained = fit(training_examples(var_dir), spec=spec, model_id=f"clf-{digest[:12]}")
    if trained.linear is None:
        raise ValueError(f"{spec.label()}: only linear models with temperature calibration can be shipped")
    log.info("classifier %s trained in %ss on %d texts", trained.model_id, trained.meta["train_seconds"],
             trained.meta["n_examples"])
    return trained.linear


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise builds across processes (several workers starting at once build once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - not POSIX: the thread lock still serialises this process
            pass
        yield


def _remove_stale(current: Path) -> None:
    """Keep the newest two models so a rollback does not retrain, and drop the rest."""
    models = sorted(current.parent.glob("classifier-*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in models[2:]:
        with contextlib.suppress(OSError):
            old.unlink()
            old.with_suffix(".lock").unlink(missing_ok=True)
