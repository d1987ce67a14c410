"""Per-key rate limits and daily quotas (shared by every process through the database), audit, keys and CLI."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

from core.app import create_app
from core.models import AuditEntry
from core.open311.cli import register
from core.open311.models import ApiClient
from core.open311.wiring import runtime_of
from core.settings import Settings, get_settings
from tests.conftest import Api
from tests.open311.conftest import make_key, query
from tests.open311.test_requests import MANHOLE

NOON = dt.datetime(2026, 11, 22, 4, 0, 10, tzinfo=dt.UTC)  # 12:00:10 北京时间


def test_rate_per_minute_and_daily_quota(api: Api) -> None:
    key = make_key(api, "app", rate=3, quota=2)
    runtime = runtime_of(api.ctx)
    runtime.clock = lambda: NOON

    answers = [api.get("/open311/v2/requests.json", headers=key.headers) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers[:3]] == ["2", "1", "0"]
    refused = answers[3]
    assert refused.json() == [{"code": 429, "description": "请求过于频繁（每分钟最多 3 次），请 50 秒后重试"}]
    assert refused.headers["Retry-After"] == "50"
    xml = api.get("/open311/v2/requests.xml", headers=key.headers)
    assert xml.status_code == 429 and b"<errors><error><code>429</code>" in xml.content

    # The next minute is a new window; submissions also count against the daily quota.
    runtime.clock = lambda: NOON + dt.timedelta(minutes=1)
    posts = [api.client.post("/open311/v2/requests.json", data=MANHOLE, headers=key.headers) for _ in range(3)]
    assert [p.status_code for p in posts] == [201, 201, 429]
    assert posts[2].json()[0]["description"].startswith("今日提交配额（2 次）已用完")
    assert int(posts[2].headers["Retry-After"]) == 12 * 3600 - 70  # until local midnight
    runtime.clock = lambda: NOON + dt.timedelta(minutes=2)
    assert api.get("/open311/v2/requests.json", headers=key.headers).status_code == 200  # reading is not a submission
    runtime.clock = lambda: NOON + dt.timedelta(hours=12, minutes=1)  # the next local day
    assert api.client.post("/open311/v2/requests.json", data=MANHOLE, headers=key.headers).status_code == 201

    actions = query(api, select(AuditEntry.action).where(AuditEntry.actor == "app"))
    assert actions.count("open311.rate_limited") == 3
    assert actions.count("open311.request.create") == 3 and actions.count("open311.requests.list") == 4
    (client,) = query(api, select(ApiClient))
    assert client.last_used_at is not None


def test_two_processes_share_the_counters(api: Api, settings: Settings) -> None:
    key = make_key(api, "app", rate=4)
    with TestClient(create_app(settings)) as second:
        runtime_of(api.ctx).clock = lambda: NOON
        runtime_of(second.app_state["ctx"]).clock = lambda: NOON
        codes = [(api.client if i % 2 else second).get("/open311/v2/requests.json", headers=key.headers).status_code
                 for i in range(6)]
    assert codes == [200, 200, 200, 200, 429, 429]


def test_disabled_keys_and_admin_api(api: Api) -> None:
    created = api.post("/api/open311/clients", json={"name": "巡查App", "scopes": ["open311", "read_all"]})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["api_key"].startswith("o311_") and body["signing_secret"].startswith("whsec_")
    assert body["rate_per_minute"] == 60 and body["quota_per_day"] == 5000
    headers = {"X-Api-Key": body["api_key"]}
    assert api.get("/open311/v2/requests.json", headers=headers).status_code == 200
    assert api.get(f"/open311/v2/requests.json?api_key={body['api_key']}").status_code == 200
    listed = api.get("/api/open311/clients").json()
    assert [c["name"] for c in listed] == ["巡查App"] and "api_key" not in listed[0]
    assert api.post(f"/api/open311/clients/{body['id']}/disable").json()["active"] is False
    refused = api.get("/open311/v2/requests.json", headers=headers)
    assert refused.status_code == 403
    duplicate = api.post("/api/open311/clients", json={"name": "巡查App"})
    assert duplicate.status_code == 409 and duplicate.json()["error"]["id"] == "client-exists"


def test_non_admins_cannot_manage_keys(api: Api) -> None:
    from tests.conftest import create_operator_sync

    create_operator_sync(api, "agent1", role="agent")
    api.client.cookies.clear()
    agent = api.login("agent1")
    assert agent.get("/api/open311/clients").status_code == 403
    assert agent.post("/api/open311/clients", json={"name": "x"}).status_code == 403


def test_cli_creates_a_key_shown_once(api: Api, settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                      tmp_path: Path) -> None:
    monkeypatch.setenv("INTAKE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("INTAKE_VAR_DIR", str(tmp_path / "cli-var"))
    get_settings.cache_clear()
    try:
        group = click.Group("intake")
        register(group)
        runner = CliRunner()
        result = runner.invoke(group, ["apikey", "create", "--name", "12345平台", "--scope", "12345",
                                       "--scope", "open311", "--rate-per-minute", "120"])
        assert result.exit_code == 0, result.output
        key = next(line.split()[-1] for line in result.output.splitlines() if "api_key:" in line)
        secret = next(line.split()[-1] for line in result.output.splitlines() if "signing secret:" in line)
        listed = runner.invoke(group, ["apikey", "list"])
        assert "12345平台" in listed.output and key not in listed.output and secret not in listed.output
        assert "12345,open311" in listed.output and "120/min" in listed.output
        again = runner.invoke(group, ["apikey", "create", "--name", "12345平台"])
        assert again.exit_code != 0 and "已存在" in again.output
        assert api.get("/open311/v2/requests.json", headers={"X-Api-Key": key}).status_code == 200
        rotated = runner.invoke(group, ["apikey", "rotate", "--name", "12345平台"])
        assert rotated.exit_code == 0
        new_key = rotated.output.split()[-1]
        assert api.get("/open311/v2/requests.json", headers={"X-Api-Key": key}).status_code == 403
        assert api.get("/open311/v2/requests.json", headers={"X-Api-Key": new_key}).status_code == 200
        assert runner.invoke(group, ["apikey", "disable", "--name", "12345平台"]).exit_code == 0
        assert api.get("/open311/v2/requests.json", headers={"X-Api-Key": new_key}).status_code == 403
    finally:
        get_settings.cache_clear()
