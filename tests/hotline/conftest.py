"""Real-Asterisk fixtures: the dev PBX (Debian sid chroot, cached under var/asterisk) and a real app process.

As root the PBX is built once (minutes, downloads Debian packages), then reused; without root, or when the
build fails, these tests skip — or fail when INTAKE_TEST_REQUIRE_SERVICES=1 (`make test`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.migrate import upgrade
from core.settings import Settings
from hotline.pbx import DevPbx, PbxError, params_from_settings, seat_password
from tests.conftest import PASSWORD, PG_ADMIN_URL, _pg_admin, _unavailable
from tests.fakes.workflow_platform import free_port

REPO = Path(__file__).resolve().parents[2]
PBX_DIR = Path(os.environ.get("INTAKE_TEST_PBX_DIR") or REPO / "var" / "asterisk")
DEV_SEAT_SECRET = "intake-dev-sip"


@pytest.fixture(scope="session")
def pbx() -> Iterator[DevPbx]:
    """The dev Asterisk 22, built and started if needed (and stopped again if this run started it)."""
    if os.geteuid() != 0:
        _unavailable("Asterisk (the dev PBX runs in a chroot and needs root)", PermissionError("not root"))
    for tool in ("debootstrap", "espeak-ng", "sox", "unshare"):
        if shutil.which(tool) is None:
            _unavailable("Asterisk", FileNotFoundError(f"{tool} missing: run scripts/system-deps.sh"))
    dev = DevPbx(PBX_DIR)
    was_running = dev.pid() is not None
    try:
        dev.up(params_from_settings(Settings(env="test"), dev=True), echo=lambda line: sys.stderr.write(line + "\n"))
    except (PbxError, OSError, subprocess.SubprocessError) as err:
        _unavailable("Asterisk", err)
    yield dev
    if not was_running:
        dev.stop()


def reset_pbx(pbx: DevPbx) -> None:
    """No calls, no queue members, straight into the queue, open regardless of the hour."""
    pbx.cli("channel request hangup all")
    for queue in ("hotline-12319", "hotline-12345"):
        for interface in re.findall(r"\((PJSIP/\d+)\)", pbx.cli(f"queue show {queue}")):
            pbx.cli(f"queue remove member {interface} from {queue}")
    pbx.cli("dialplan set global HOTLINE_GREETING no")
    pbx.cli("dialplan set global HOTLINE_MODE open")
    deadline = time.monotonic() + 5
    while "0 active channels" not in pbx.cli("core show channels count") and time.monotonic() < deadline:
        time.sleep(0.1)


def seat_pw(extension: str) -> str:
    """The dev PBX's SIP password of a seat."""
    return seat_password(DEV_SEAT_SECRET, extension)


@dataclass
class LiveStream:
    """Reads GET /api/events of one logged-in operator in a thread."""

    client: httpx.Client
    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    connected: threading.Event = field(default_factory=threading.Event)

    def start(self) -> LiveStream:
        threading.Thread(target=self._run, daemon=True).start()
        assert self.connected.wait(10), "live stream did not connect"
        return self

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self.client.base_url, cookies=self.client.cookies, timeout=None) as client:
                with client.stream("GET", "/api/events") as stream:
                    topic = ""
                    for line in stream.iter_lines():
                        self.connected.set()
                        if line.startswith("event:"):
                            topic = line[6:].strip()
                        elif line.startswith("data:"):
                            self.events.append((time.time(), topic, json.loads(line[5:])))
        except httpx.HTTPError:
            return  # the app under test stopped

    def wait(self, topic: str, where: Callable[[dict[str, Any]], bool] = lambda d: True,
             timeout: float = 15) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, name, data in list(self.events):
                if name == topic and where(data):
                    return at, data
            time.sleep(0.02)
        raise AssertionError(f"no {topic} event; got {[name for _, name, _ in self.events]}")


@dataclass
class Operator:
    """A logged-in operator of the app under test."""

    client: httpx.Client
    csrf: str
    extension: str

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(url, headers={"X-CSRF-Token": self.csrf}, **kwargs)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(url, **kwargs)

    def call(self, call_id: int) -> dict[str, Any]:
        response = self.get(f"/api/hotline/calls/{call_id}")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


@dataclass
class HotlineApp:
    """A real `intake serve` process on PostgreSQL following the dev PBX."""

    url: str
    env: dict[str, str]
    log_path: Path

    def operator(self, extension: str, *, role: str = "admin") -> Operator:
        username = f"op{extension}"
        intake = str(Path(sys.executable).with_name("intake"))
        subprocess.run([intake, "admin", "create", "--username", username, "--password", PASSWORD, "--role", role,
                        "--extension", extension], env=self.env, check=False, capture_output=True)
        client = httpx.Client(base_url=self.url, timeout=30)
        response = client.post("/api/session", json={"username": username, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return Operator(client, response.json()["csrf_token"], extension)

    def wait_status(self, predicate: Callable[[dict[str, Any]], bool], op: Operator, timeout: float = 15) -> dict[
            str, Any]:
        deadline = time.monotonic() + timeout
        info: dict[str, Any] = {}
        while time.monotonic() < deadline:
            info = op.get("/api/hotline/status").json()
            if predicate(info):
                return info
            time.sleep(0.05)
        raise AssertionError(f"hotline status never matched: {info}")


@pytest.fixture(scope="module")
def hotline_db() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one module (no closed cases of other tests to call back)."""
    name = f"intake_hotline_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as err:  # noqa: BLE001
        _unavailable("PostgreSQL", err)
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    upgrade(Settings(database_url=url).database_url)
    yield url
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def app_env(pbx: DevPbx, database_url: str, var: Path, **extra: str) -> dict[str, str]:
    """Environment of an `intake serve` following the dev PBX."""
    return {
        **os.environ,
        "INTAKE_ENV": "test",
        "INTAKE_DATABASE_URL": database_url,
        "INTAKE_VAR_DIR": str(var),
        "INTAKE_AMI_HOST": "127.0.0.1",
        "INTAKE_HOTLINE_PBX_DIR": str(pbx.base_dir),
        "INTAKE_HOTLINE_RECORDINGS_DIR": str(pbx.monitor_dir),
        "INTAKE_OUTBOX_POLL_SECONDS": "0.1",
        "INTAKE_DEPARTMENT_API_TOKEN": "dept-token",
        "INTAKE_HOTLINE_SURVEY_DELAY_MINUTES": "0",
        "INTAKE_HOTLINE_SURVEY_HOURS": "00:00-24:00",
        "INTAKE_HOTLINE_SURVEY_POLL_SECONDS": "0.5",
        "INTAKE_HOTLINE_SURVEY_RETRY_MINUTES": "1",
        "INTAKE_LOG_LEVEL": "INFO",
        **extra,
    }


def start_app(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], HotlineApp]:
    """Start `intake serve` and wait until its AMI link is up."""
    port = free_port()
    intake = str(Path(sys.executable).with_name("intake"))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([intake, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/status", timeout=1).json()["components"]["ami"]["status"] == "ok":
                return proc, HotlineApp(url, env, log_path)
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.05)
    proc.terminate()
    proc.wait(timeout=15)
    raise AssertionError(f"app did not connect to AMI:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def hotline_app(pbx: DevPbx, hotline_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HotlineApp]:
    """The app as deployed: its own process, PostgreSQL, AMI to the dev PBX, recordings read from its spool."""
    reset_pbx(pbx)
    var = tmp_path_factory.mktemp("hotline-app")
    proc, app = start_app(app_env(pbx, hotline_db, var), var / "serve.log")
    try:
        yield app
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        reset_pbx(pbx)
