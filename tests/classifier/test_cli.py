"""`intake classify` round trip and the `intake classifier` commands, through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from classifier import store
from classifier.corpus import Example
from classifier.linear import LinearModel
from core.cli import main


def test_classify_round_trip(cli_env: Path, tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": 1, "text": "市民来电反映：解放路与人民路交叉口东北角一污水井盖破损塌陷"}, ensure_ascii=False),
        json.dumps({"id": "b", "text": "楼下垃圾桶满了溢出来好几天没人收", "district": "江北区"}, ensure_ascii=False),
        "{not json",
        json.dumps({"id": 4}),
        json.dumps([1, 2]),
        "",
        json.dumps({"id": 7, "text": "😀😀"}),
        json.dumps({"id": 8, "text": ""}),
        json.dumps({"id": {"nested": True}, "text": "共享单车堆成山"}, ensure_ascii=False),
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    target = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["classify", "--input", str(source), "--output", str(target)])
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [o["id"] for o in out] == [1, "b", None, 4, None, 7, 8, {"nested": True}]  # the blank line is skipped
    first = out[0]
    assert len(first["suggestions"]) >= 3 and first["suggestions"][0] == {
        "code": "01002", "name": "污水井盖异常", "score": first["suggestions"][0]["score"]}
    assert 0.0 <= first["suggestions"][0]["score"] <= 1.0
    assert first["major"] == "01" and first["department"] == "drainage" and first["needs_review"] is False
    assert first["address"]["text"] == "解放路与人民路交叉口东北角" and first["address"]["district"] == "中心区"
    assert out[1]["suggestions"][0]["code"] == "06042" and out[1]["district"] == "江北区"
    assert all("error" in o for o in out[2:5]) and "not valid JSON" in out[2]["error"]
    assert out[5]["suggestions"] == [] and out[5]["needs_review"] and out[5]["reason"]
    assert out[7]["suggestions"][0]["code"] == "09011"


def test_classify_stdin_stdout(cli_env: Path) -> None:
    result = CliRunner().invoke(main, ["classify", "--input", "-", "--output", "-", "-k", "3"],
                                input='{"id": 1, "text": "路灯不亮"}\n')
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip().splitlines()[0])
    assert line["id"] == 1 and len(line["suggestions"]) == 3 and line["suggestions"][0]["code"] == "01037"


def test_build_and_info(cli_env: Path) -> None:
    runner = CliRunner()
    build = runner.invoke(main, ["classifier", "build"])
    assert build.exit_code == 0 and "already built" in build.output
    info = runner.invoke(main, ["classifier", "info"])
    assert info.exit_code == 0 and json.loads(info.output)["classes"] == 250


def test_train_from_cases_validates(cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Path] = []

    def fake_build(*, var_dir: Path, **_: object) -> tuple[LinearModel, bool]:
        # Retraining the full model is covered by test_model; here only the import and the hand-off matter.
        built.append(var_dir)
        return LinearModel(classes=[], parts=[], weights=np.zeros((0, 0)), intercept=np.zeros(0), beta=1.0,
                           meta={"model_id": "clf-x", "n_examples": 3, "sources": {"cases": 2}}), True

    monkeypatch.setattr(store, "load_or_build", fake_build)
    csv_path = tmp_path / "cases.csv"
    csv_path.write_text("text,code,extra\n人民路上的路灯不亮了,01037,x\n垃圾桶满了,6042,y\n"
                        "乱码,99999,z\n,01037,\n人民路上的路灯不亮了,01037,x\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["classifier", "train", "--from", str(csv_path)])
    assert result.exit_code == 0, result.output
    assert "accepted 2 cases over 2 types" in result.output and "99999 ×1" in result.output
    assert "1 already imported" in result.output and "1 empty" in result.output
    assert built == [cli_env]
    stored = (cli_env / "classifier" / "cases.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(s)["code"] for s in stored] == ["01037", "06042"]
    bad = tmp_path / "bad.csv"
    bad.write_text("description,type\n路灯,01037\n", encoding="utf-8")
    refused = CliRunner().invoke(main, ["classifier", "train", "--from", str(bad)])
    assert refused.exit_code != 0 and "text and code" in refused.output


def test_evaluate_reports(cli_env: Path, small_corpus: list[Example], monkeypatch: pytest.MonkeyPatch) -> None:
    from classifier import evaluation
    from classifier.spec import ModelSpec

    monkeypatch.setattr(store, "training_examples", lambda var_dir: list(small_corpus))
    monkeypatch.setattr(evaluation, "COMPARISON", (ModelSpec(), ModelSpec(features="word", min_df=2),
                                                   ModelSpec(algorithm="cnb")))
    runner = CliRunner()
    report = runner.invoke(main, ["classifier", "evaluate", "--folds", "4", "--per-class"])
    assert report.exit_code == 0, report.output
    for needle in ("accuracy", "top-3", "macro-F1", "per class", "most confused", "by voice", "06042 垃圾站",
                   "大类 right", "department right"):
        assert needle in report.output
    table = runner.invoke(main, ["classifier", "evaluate", "--compare", "--folds", "3", "--split", "random"])
    assert table.exit_code == 0, table.output
    assert table.output.count("| char") == 2 and "| word" in table.output and "cnb" in table.output


def test_correct(cli_env: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["classifier", "correct", "--text", "桥洞下有人住", "--code", "09017"])
    assert ok.exit_code == 0
    assert (cli_env / "classifier" / "corrections.jsonl").exists()
    refused = runner.invoke(main, ["classifier", "correct", "--text", "桥洞下有人住", "--code", "12345"])
    assert refused.exit_code != 0


def test_load_uses_the_settings(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from classifier.service import Classifier
    from core.settings import get_settings

    monkeypatch.setenv("INTAKE_CLASSIFIER_REVIEW_THRESHOLD", "0.9")
    get_settings.cache_clear()
    service = Classifier.load(build=False)
    assert service.review_threshold == 0.9 and service.model_id.startswith("clf-")
    assert len(service.taxonomy.types) == 250
