"""The app-side holder: loads in the background, reports on /status, answers once ready."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from classifier.service import ModelNotReady
from classifier.wiring import ClassifierHolder, wire
from core.status import Health, StatusRegistry
from kb.service import KnowledgeBase


def _ctx(var_dir: Path, env: str = "test") -> SimpleNamespace:
    settings = SimpleNamespace(var_dir=var_dir, classifier_review_threshold=0.5, env=env)
    outbox = SimpleNamespace(handlers={})
    outbox.register = outbox.handlers.__setitem__
    return SimpleNamespace(settings=settings, kb=KnowledgeBase.load(), status=StatusRegistry(), classifier=None,
                           outbox=outbox, sessions=None)


def test_wire_loads_prebuilt_model(model_var_dir: Path) -> None:
    ctx = _ctx(model_var_dir)
    wire(ctx)  # type: ignore[arg-type]
    holder = ctx.classifier
    assert isinstance(holder, ClassifierHolder)
    assert holder.wait(timeout=60)
    status = asyncio.run(ctx.status.run())["classifier_model"]
    assert status.status == Health.OK and status.detail.startswith("clf-")
    result = asyncio.run(holder.suggest_async("共享单车堆成山把地铁口堵了", district="东城区"))
    assert result.suggestions[0].code == "09011" and result.to_dict()["district"] == "东城区"
    assert holder.suggest("路灯不亮").suggestions[0].code == "01037"


def test_missing_model_in_tests_fails_without_training(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    wire(ctx)  # type: ignore[arg-type]
    assert ctx.classifier.wait(timeout=30)
    status = asyncio.run(ctx.status.run())["classifier_model"]
    assert status.status == Health.NOT_CONFIGURED and "intake classifier build" in status.detail
    with pytest.raises(ModelNotReady):
        ctx.classifier.suggest("路灯不亮")


def test_status_while_loading(tmp_path: Path) -> None:
    kb = KnowledgeBase.load()
    holder = ClassifierHolder(var_dir=tmp_path, review_threshold=0.5, taxonomy=kb.taxonomy, routing=kb.routing,
                              build=False)
    status = holder.status()
    assert status.status == Health.NOT_CONFIGURED and status.detail == "loading"
    with pytest.raises(ModelNotReady):
        asyncio.run(holder.suggest_async("路灯不亮"))


def test_broken_model_is_a_failure(tmp_path: Path, model_var_dir: Path) -> None:
    import shutil

    shutil.copytree(model_var_dir, tmp_path / "var")
    for model in (tmp_path / "var" / "models").glob("classifier-*.npz"):
        model.write_bytes(b"not a model")
    ctx = _ctx(tmp_path / "var")
    wire(ctx)  # type: ignore[arg-type]
    assert ctx.classifier.wait(timeout=30)
    status = asyncio.run(ctx.status.run())["classifier_model"]
    assert status.status == Health.FAIL and status.detail
    with pytest.raises(ModelNotReady):
        ctx.classifier.suggest("路灯不亮")


def test_previous_model_serves_while_the_current_one_trains(tmp_path: Path, model_var_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    import threading

    from classifier import service as service_module
    from classifier.store import load

    models = tmp_path / "models"
    models.mkdir()
    previous = models / "classifier-0000000000000000.npz"
    shutil.copy(next((model_var_dir / "models").glob("classifier-*.npz")), previous)
    release = threading.Event()
    trained = load(previous)

    def slow_build(**_: object) -> tuple[object, bool]:
        assert release.wait(30)
        return trained, True

    monkeypatch.setattr(service_module, "load_or_build", slow_build)
    kb = KnowledgeBase.load()
    holder = ClassifierHolder(var_dir=tmp_path, review_threshold=0.5, taxonomy=kb.taxonomy, routing=kb.routing,
                              build=True)
    holder.start()
    for _ in range(300):
        if holder.service is not None:
            break
        threading.Event().wait(0.1)
    first = holder.service
    assert first is not None and not holder.wait(0)
    assert holder.suggest("路灯不亮").suggestions[0].code == "01037"
    assert holder.status().status == Health.OK
    release.set()
    assert holder.wait(30)
    assert holder.service is not first and holder.status().status == Health.OK
