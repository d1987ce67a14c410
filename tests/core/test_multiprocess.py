"""Two real app processes on PostgreSQL + Redis share live events and never handle the same job twice."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.bus import RedisBus
from tests.conftest import PASSWORD, REDIS_URL, _unavailable
from tests.fakes.workflow_platform import FakePlatform, free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def _redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as err:  # noqa: BLE001
        _unavailable("Redis", err)


async def test_redis_bus_delivers_between_two_buses() -> None:
    _redis_or_skip()
    a, b = RedisBus(REDIS_URL), RedisBus(REDIS_URL)
    await a.start()
    await b.start()
    try:
        events = b.subscribe()
        waiter = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.1)
        await a.publish("draft.created", {"number": "2611220001"})
        event = await asyncio.wait_for(waiter, timeout=5)
        assert event.topic == "draft.created" and event.data == {"number": "2611220001"}
        assert event.origin != b.process_id
        await events.aclose()  # type: ignore[attr-defined]
    finally:
        await a.stop()
        await b.stop()


@pytest.fixture
def two_apps(pg_database: str, db_url: str, tmp_path: Path) -> Iterator[tuple[list[str], FakePlatform]]:
    _redis_or_skip()
    if not db_url.startswith("postgresql"):
        pytest.skip("multi-process runs on PostgreSQL")
    platform = FakePlatform(api_key="platform-key").start()
    env = {
        **os.environ,
        "INTAKE_ENV": "test",
        "INTAKE_DATABASE_URL": db_url,
        "INTAKE_REDIS_URL": REDIS_URL,
        "INTAKE_VAR_DIR": str(tmp_path / "var"),
        "INTAKE_WORKFLOW_BACKEND": "http",
        "INTAKE_WORKFLOW_URL": platform.url,
        "INTAKE_WORKFLOW_API_KEY": "platform-key",
        "INTAKE_OUTBOX_POLL_SECONDS": "0.1",
        "INTAKE_LOG_LEVEL": "WARNING",
    }
    intake = str(Path(sys.executable).with_name("intake"))
    subprocess.run([intake, "admin", "create", "--username", "admin", "--password", PASSWORD], env=env, check=True,
                   capture_output=True)
    procs, urls = [], []
    for _ in range(2):
        port = free_port()
        procs.append(subprocess.Popen([intake, "serve", "--port", str(port)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url in urls:
            for _ in range(100):
                try:
                    if httpx.get(f"{url}/status", timeout=1).json()["components"]["redis"]["status"] == "ok":
                        break
                except (httpx.HTTPError, KeyError, ValueError):
                    pass
                time.sleep(0.1)
            else:
                raise AssertionError(f"{url} did not start")
        yield urls, platform
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
        platform.stop()


def _login(url: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=url, timeout=10)
    response = client.post("/api/session", json={"username": "admin", "password": PASSWORD})
    response.raise_for_status()
    return client, response.json()["csrf_token"]


def test_two_processes_share_events_and_split_the_work(two_apps: tuple[list[str], FakePlatform]) -> None:
    (url_a, url_b), platform = two_apps
    a, csrf_a = _login(url_a)
    b, csrf_b = _login(url_b)

    received: list[dict[str, object]] = []
    connected = threading.Event()

    def listen() -> None:
        with b.stream("GET", "/api/events", timeout=20) as stream:
            for line in stream.iter_lines():
                connected.set()
                if line.startswith("data:"):
                    received.append(json.loads(line[5:]))
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert connected.wait(10)
    time.sleep(0.3)
    draft = a.post("/api/drafts", json={"text": "桥下有人摆摊"}, headers={"X-CSRF-Token": csrf_a}).json()
    listener.join(10)
    assert received and received[0]["number"] == draft["number"]

    drafts = []
    for i in range(20):
        client, csrf = (a, csrf_a) if i % 2 else (b, csrf_b)
        d = client.post("/api/drafts", json={"text": f"第{i}处占道经营"}, headers={"X-CSRF-Token": csrf}).json()
        accepted = client.post(f"/api/drafts/{d['id']}/accept", json={"case_type_code": "09006"},
                               headers={"X-CSRF-Token": csrf})
        assert accepted.status_code == 200, accepted.text
        drafts.append(d["id"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        numbers = [a.get(f"/api/drafts/{i}").json()["case_number"] for i in drafts]
        if all(numbers):
            break
        time.sleep(0.2)
    assert all(numbers)
    submissions = [key for path, key in platform.state.requests if path == "/cases"]
    assert len(submissions) == 20 and len(set(submissions)) == 20  # each job handled by exactly one process
