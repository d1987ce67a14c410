"""Hand-off to an external platform over HTTP: outages, timeouts, exactly-once, order, signed webhooks."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.app import create_app
from core.workflow.http import sign
from tests.conftest import Api, create_operator_sync, make_settings
from tests.fakes.workflow_platform import FakePlatform


@pytest.fixture
def platform() -> Iterator[FakePlatform]:
    fake = FakePlatform(api_key="platform-key").start()
    yield fake
    fake.stop()


@pytest.fixture
def http_api(db_url: str, tmp_path: Path, platform: FakePlatform) -> Iterator[Api]:
    settings = make_settings(db_url, tmp_path, workflow_backend="http", workflow_url=platform.url,
                             workflow_timeout_seconds=0.5)
    with TestClient(create_app(settings)) as client:
        api = Api(client)
        create_operator_sync(api, "admin")
        yield api.login()


def _accept(api: Api, text: str) -> int:
    draft = api.post("/api/drafts", json={"text": text, "reporter": {"phone": "13812345678"}}).json()
    case = api.post(f"/api/drafts/{draft['id']}/accept", json={"case_type_code": "06010"}).json()
    return int(case["id"])


def _drain_until(api: Api, done: callable, timeout: float = 20) -> None:  # type: ignore[valid-type]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        api.step()
        if done():
            return
        time.sleep(0.1)
    raise AssertionError("outbox did not deliver in time")


def _webhook(api: Api, event: dict[str, object], *, secret: str = "hook-secret", ts: int | None = None):  # type: ignore[no-untyped-def]
    body = json.dumps(event).encode()
    stamp = str(ts or int(time.time()))
    return api.client.post("/api/workflow/events", content=body, headers={
        "X-Intake-Timestamp": stamp, "X-Intake-Signature": sign(secret, stamp, body),
        "Content-Type": "application/json"})


def test_outage_then_recovery_delivers_every_case_exactly_once_in_order(http_api: Api, platform: FakePlatform) -> None:
    platform.state.down = True
    ids = [_accept(http_api, f"第{i}处垃圾堆放") for i in range(6)]
    for _ in range(3):
        http_api.step()
        time.sleep(0.1)
    assert not platform.state.created  # nothing gets through while the platform is down
    # Slow answers past the client timeout: the platform creates the case but the client never hears.
    platform.state.down = False
    platform.state.slow_seconds = 1.0
    http_api.step()
    platform.state.slow_seconds = 0
    platform.state.fail_next = 3
    _drain_until(http_api, lambda: all(http_api.get(f"/api/drafts/{i}").json()["case_number"] for i in ids))
    # Every submission reached the platform as exactly one case, however many times it was retried.
    assert len(platform.state.created) == len(set(platform.state.created)) == 6
    retries = [k for _, k in platform.state.requests]
    assert len(retries) > 6

    # Close one case through signed webhooks, rate it, and check the rating follows the submission in order.
    number = http_api.get(f"/api/drafts/{ids[0]}").json()["case_number"]
    for seq, step in [(2, "dispatch"), (3, "handle"), (4, "feedback"), (5, "verify"), (6, "close")]:
        response = _webhook(http_api, {"event_id": f"e{seq}", "case_number": number, "seq": seq, "step": step,
                                       "at": "2026-11-22T08:00:00+00:00"})
        assert response.status_code == 200, response.text
    platform.state.fail_next = 2
    assert http_api.post(f"/api/cases/{number}/rating", json={"score": 4}).status_code == 200
    _drain_until(http_api, lambda: bool(platform.state.ratings))
    assert platform.state.ratings == [(number, 4)]


def test_webhook_rejects_forgeries_and_ignores_replays(http_api: Api, platform: FakePlatform) -> None:
    case_id = _accept(http_api, "路边垃圾")
    _drain_until(http_api, lambda: bool(http_api.get(f"/api/drafts/{case_id}").json()["case_number"]))
    number = http_api.get(f"/api/drafts/{case_id}").json()["case_number"]
    event = {"event_id": "x1", "case_number": number, "seq": 2, "step": "dispatch", "at": "2026-11-22T08:00:00+00:00"}
    assert _webhook(http_api, event, secret="wrong").status_code == 401
    assert _webhook(http_api, event, ts=int(time.time()) - 3600).status_code == 401
    assert _webhook(http_api, event).json() == {"status": "ok"}
    assert _webhook(http_api, event).json() == {"status": "duplicate"}
    bad = _webhook(http_api, {"event_id": "x2", "case_number": number, "seq": "two", "step": "nope", "at": "x"})
    assert bad.status_code == 400 and bad.json()["error"]["id"] == "malformed-event"
    unknown = _webhook(http_api, {**event, "event_id": "x3", "case_number": "NOPE"})
    assert unknown.status_code == 404
    timeline = http_api.get(f"/api/cases/{number}").json()["timeline"]
    assert [e["step"] for e in timeline].count("dispatch") == 1
    # An older event arriving late is recorded but does not move the case backwards.
    _webhook(http_api, {**event, "event_id": "x4", "seq": 4, "step": "feedback"})
    _webhook(http_api, {**event, "event_id": "x5", "seq": 3, "step": "handle"})
    assert http_api.get(f"/api/cases/{number}").json()["step"] == "feedback"
