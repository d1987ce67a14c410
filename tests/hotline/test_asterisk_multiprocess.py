"""Two app processes on PostgreSQL + Redis and the real Asterisk: one follows the calls, the pop reaches the
operator on whichever process their browser is connected to, and the other takes over when the follower dies."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotline.pbx import DevPbx
from tests.conftest import REDIS_URL, REQUIRE_SERVICES, _unavailable
from tests.hotline.conftest import HotlineApp, LiveStream, app_env, reset_pbx, seat_pw, start_app

try:
    from tests.hotline.sip_phone import CitizenPhone, SeatPhone
except ImportError as err:  # pyVoIP comes with the `dev` (or `voip`) extra
    if REQUIRE_SERVICES:
        raise
    pytest.skip(f"pyVoIP unavailable: {err}", allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def two_apps(pbx: DevPbx, hotline_db: str, tmp_path: Path) -> Iterator[list[tuple[object, HotlineApp]]]:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as err:  # noqa: BLE001
        _unavailable("Redis", err)
    reset_pbx(pbx)
    apps = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            env = app_env(pbx, hotline_db, tmp_path / name, INTAKE_REDIS_URL=REDIS_URL)
            apps.append(start_app(env, tmp_path / name / "serve.log"))
        yield apps  # type: ignore[misc]
    finally:
        for proc, _ in apps:
            if proc.poll() is None:  # type: ignore[attr-defined]
                proc.terminate()  # type: ignore[attr-defined]
                proc.wait(timeout=15)  # type: ignore[attr-defined]
        reset_pbx(pbx)


def test_one_follower_pops_across_processes_and_another_takes_over(
        two_apps: list[tuple[object, HotlineApp]]) -> None:
    (proc_a, app_a), (proc_b, app_b) = two_apps
    op_a, op_b = app_a.operator("8006"), app_b.operator("8006")  # the same operator, logged in on each process
    deadline = time.monotonic() + 10
    leaders: list[bool] = []
    while time.monotonic() < deadline:
        leaders = [op_a.get("/api/hotline/status").json()["leader"], op_b.get("/api/hotline/status").json()["leader"]]
        if leaders.count(True) == 1:
            break
        time.sleep(0.1)
    assert leaders.count(True) == 1, leaders
    follower, other = (op_a, op_b) if leaders[0] else (op_b, op_a)
    follower_proc = proc_a if leaders[0] else proc_b
    # The browser is connected to the process that does NOT follow the calls: the pop travels through Redis.
    live = LiveStream(other.client).start()
    seat = SeatPhone("8006", seat_pw("8006"), sip_port=5076, rtp_low=30300).start()
    citizen = CitizenPhone("13812340006", carrier_port=5064).start()
    try:
        assert other.post("/api/hotline/seat/login", json={"extension": "8006"}).json()["logged_in"]
        call = citizen.dial("12319")
        seat.wait_ringing(15)
        _, pop = live.wait("call.ringing", lambda d: d["caller_masked"] == "138****0006")
        citizen.hangup(call)
        live.wait("call.missed", lambda d: d["call_id"] == pop["call_id"])

        follower_proc.kill()  # type: ignore[attr-defined]  # a crash: its advisory lock goes with its connection
        follower_proc.wait(timeout=15)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 15
        while not other.get("/api/hotline/status").json()["leader"]:
            assert time.monotonic() < deadline, "no process took over"
            time.sleep(0.1)
        call = citizen.dial("12319")
        seat.wait_ringing(15, count=2)
        _, pop2 = live.wait("call.ringing", lambda d: d["call_id"] != pop["call_id"])
        citizen.hangup(call)
        live.wait("call.missed", lambda d: d["call_id"] == pop2["call_id"])
    finally:
        citizen.stop()
        seat.stop()
    calls = [c for c in other.get("/api/hotline/calls").json() if c["caller_masked"] == "138****0006"]
    assert len(calls) == 2 and all(c["ended_at"] and c["seat"] is None for c in calls)
    assert follower is not other
