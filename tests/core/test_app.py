"""The app serves /status, /metrics, /docs and the login page; the CLI upgrades and serves any database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

from core.cli import main
from tests.conftest import Api
from tests.fakes.workflow_platform import free_port


def test_status_metrics_docs(api: Api) -> None:
    status = api.get("/status")
    assert status.status_code == 200
    components = status.json()["components"]
    assert components["db"]["status"] == "ok"
    assert components["workflow"] == {"status": "ok", "detail": "builtin"}
    assert components["ami"]["status"] == "not configured"
    assert components["sms_gateway"]["status"] == "ok"
    for name in ("redis", "wechat_token", "classifier_model"):
        assert name in components
    metrics = api.get("/metrics")
    assert metrics.status_code == 200 and "intake_outbox_pending" in metrics.text
    assert api.get("/docs").status_code == 200
    assert "/api/drafts" in api.get("/openapi.json").json()["paths"]
    page = api.client.get("/login")
    assert "Content-Security-Policy" in page.headers and page.headers["X-Frame-Options"] == "DENY"


def test_cli_help_lists_the_commands() -> None:
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0
    for command in ("serve", "db", "admin", "outbox"):
        assert command in top.output
    assert "--port" in runner.invoke(main, ["serve", "--help"]).output
    assert "upgrade" in runner.invoke(main, ["db", "--help"]).output
    assert "create" in runner.invoke(main, ["admin", "--help"]).output


def test_upgrade_then_serve(db_url: str, tmp_path: Path) -> None:
    intake = str(Path(sys.executable).with_name("intake"))
    env = {**os.environ, "INTAKE_DATABASE_URL": db_url, "INTAKE_VAR_DIR": str(tmp_path / "var"),
           "INTAKE_LOG_LEVEL": "WARNING"}
    subprocess.run([intake, "db", "upgrade"], env=env, check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen([intake, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{url}/status", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert httpx.get(f"{url}/status").json()["components"]["db"]["status"] == "ok"
        assert "坐席登录" in httpx.get(f"{url}/login").text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
