"""`intake sms …` for operators: a test SMS through the configured gateway, opt-outs, status, Kannel config."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from core.cli import main
from core.settings import get_settings
from tests.sms.conftest import CALLBACK_TOKEN


@pytest.fixture
def cli_env(tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Settings from the environment, as operators run the CLI (SQLite copy, file gateway)."""
    db = tmp_path / "intake.db"
    shutil.copy(sqlite_template, db)
    monkeypatch.setenv("INTAKE_ENV", "test")
    monkeypatch.setenv("INTAKE_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("INTAKE_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield tmp_path / "var" / "sms-outbox.log"
    get_settings.cache_clear()


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["sms", *args], catch_exceptions=False)


def test_send_a_template_and_a_text(cli_env: Path) -> None:
    result = run("send", "--to", "13812345678", "--template", "accepted", "--param", "case_type=井盖破损",
                 "--param", "case_number=2611220001234")
    assert result.exit_code == 0, result.output
    assert "138****5678" in result.output and "13812345678" not in result.output
    assert "submitted via file" in result.output
    line = json.loads(cli_env.read_text(encoding="utf-8").splitlines()[0])
    assert line["to"] == "+8613812345678" and line["text"].startswith("【示例城管】您反映的井盖破损问题已受理")
    result = run("send", "--to", "+8613812345678", "--text", "测试短信", "--key", "check-1")
    again = run("send", "--to", "+8613812345678", "--text", "测试短信", "--key", "check-1")
    assert result.exit_code == 0 and again.exit_code == 0
    assert len(cli_env.read_text(encoding="utf-8").splitlines()) == 2  # the same key sends once


def test_bad_input_is_refused_clearly(cli_env: Path) -> None:
    assert "电话号码不正确" in run("send", "--to", "12", "--text", "x").output
    assert "无法接收短信" in run("send", "--to", "010 6552 9988", "--text", "x").output
    assert "no SMS template" in run("send", "--to", "13812345678", "--template", "nope").output
    assert run("send", "--to", "13812345678").exit_code != 0
    assert not cli_env.exists()


def test_opt_out_and_back_in(cli_env: Path) -> None:
    assert "opted out" in run("opt-out", "--to", "13812345678").output
    result = run("send", "--to", "13812345678", "--text", "退订后")
    assert result.exit_code == 1 and "skipped" in result.output
    assert "receives SMS again" in run("opt-in", "--to", "13812345678").output
    assert run("send", "--to", "13812345678", "--text", "恢复后").exit_code == 0
    status = run("status").output
    assert "gateway file: ok" in status and "skipped     1" in status and "submitted   1" in status


def test_kannel_config(cli_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert run("kannel-config").exit_code != 0  # nothing configured yet
    monkeypatch.setenv("INTAKE_SMS_CALLBACK_TOKEN", CALLBACK_TOKEN)
    monkeypatch.setenv("INTAKE_SMS_PUBLIC_BASE_URL", "http://10.0.0.5:8000")
    monkeypatch.setenv("INTAKE_SMS_KANNEL_PASSWORD", "kannel-pw")
    get_settings.cache_clear()
    out = tmp_path / "kannel.conf"
    result = run("kannel-config", "--smsc-host", "smsc.example.cn", "--smsc-username", "u", "--smsc-password", "p",
                 "--output", str(out))
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert f'post-url = "http://10.0.0.5:8000/sms/kannel/incoming/{CALLBACK_TOKEN}?id=%I&ts=%T"' in text
    assert 'password = "kannel-pw"' in text and 'smsc = "smpp"' in text and "send-sender = true" in text
    assert oct(out.stat().st_mode & 0o777) == "0o600"
