"""Open311 `POST requests` throughput over real HTTP, as ratios to baselines measured in the same run.

The app runs in uvicorn on a free local port (one process, the built-in workflow, no outbox worker); the
client is httpx. Per backend it measures:

- `insert`: one single-row INSERT transaction per iteration on the same database (the floor of any write);
- `seat draft`: `POST /api/drafts` by a logged-in seat (the core's own draft intake, session + CSRF);
- `open311`: `POST /open311/v2/requests.json` form-encoded with an API key: key check, rate-limit counters,
  validation, the draft, the request row, the audit entry — sequential and with 8 concurrent clients.

Ratios are open311 / seat draft: what the open door costs over the core's own intake.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import uvicorn

from core.app import create_app
from core.db import make_engine, make_sessionmaker
from core.migrate import upgrade
from core.models import ProcessedKey, Role
from core.open311 import service
from core.open311.models import Scope
from core.security import create_operator
from core.settings import Settings

PG_ADMIN = os.environ.get("INTAKE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD = "bench-password-123"


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """The app under uvicorn in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.port = _free_port()
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        for _ in range(200):
            if self._server.started:
                return f"http://127.0.0.1:{self.port}"
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


async def _prepare(settings: Settings) -> str:
    """Create the seat account and the API key; return the key."""
    engine = make_engine(settings)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            await create_operator(session=session, username="bench", password=PASSWORD, role=Role.AGENT)
            _client, key = await service.create_client(
                session=session, name="bench", scopes=[Scope.OPEN311], rate_per_minute=10_000_000,
                quota_per_day=10_000_000, actor="bench")
        return key
    finally:
        await engine.dispose()


async def _baseline_inserts(settings: Settings, n: int) -> float:
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    try:
        start = time.perf_counter()
        for i in range(n):
            async with sessions() as session, session.begin():
                session.add(ProcessedKey(scope="bench", key=f"{uuid.uuid4().hex}-{i}"))
        return n / (time.perf_counter() - start)
    finally:
        await engine.dispose()


async def _rate(n: int, concurrency: int, call: Callable[[int], Awaitable[httpx.Response]], expect: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            response = await call(i)
            if response.status_code != expect:
                raise RuntimeError(f"unexpected {response.status_code}: {response.text[:200]}")

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - start)


async def run_backend(name: str, url: str, n: int, tmp: Path) -> dict[str, float]:
    """Measure one backend; return requests (or transactions) per second per measurement."""
    settings = Settings(env="test", database_url=url, var_dir=tmp / name, outbox_worker=False,
                        log_level="WARNING", db_pool_size=20)
    await asyncio.to_thread(upgrade, settings.database_url)
    key = await _prepare(settings)
    results = {"insert": await _baseline_inserts(settings, n)}
    with Server(settings) as base:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            login = await http.post("/api/session", json={"username": "bench", "password": PASSWORD})
            csrf = login.json()["csrf_token"]

            def seat(i: int) -> Awaitable[httpx.Response]:
                return http.post("/api/drafts", headers={"X-CSRF-Token": csrf}, json={
                    "channel": "hotline", "text": f"解放路{i}号门口污水井盖破损，晚上很危险",
                    "location": {"address": f"解放路{i}号", "lat": 30.59, "lng": 114.30}})

            def open311(i: int) -> Awaitable[httpx.Response]:
                return http.post("/open311/v2/requests.json", data={
                    "api_key": key, "service_code": "01002", "lat": "30.5912", "long": "114.3021",
                    "address_string": f"解放路{i}号", "description": f"解放路{i}号门口污水井盖破损，晚上很危险",
                    "attribute[injured]": "no", "phone": f"1380000{i % 10000:04d}"})

            await _rate(20, 1, seat, 201)  # warm up pools and caches
            await _rate(20, 1, open311, 201)
            results["seat draft"] = await _rate(n, 1, seat, 201)
            results["open311"] = await _rate(n, 1, open311, 201)
            results["seat draft x8"] = await _rate(n, 8, seat, 201)
            results["open311 x8"] = await _rate(n, 8, open311, 201)
    return results


async def main() -> None:
    """Measure PostgreSQL (and SQLite for comparison) and print rates and ratios."""
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=300, help="requests per measurement")
    parser.add_argument("--no-sqlite", action="store_true", help="measure PostgreSQL only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        backends: list[tuple[str, str]] = []
        pg_name = f"intake_bench_{uuid.uuid4().hex[:8]}"
        try:
            await _pg(f'CREATE DATABASE "{pg_name}"')
            backends.append(("postgresql", PG_ADMIN.rsplit("/", 1)[0] + f"/{pg_name}"))
        except Exception as err:  # noqa: BLE001
            print(f"postgresql: skipped ({err})")
        if not args.no_sqlite:
            backends.append(("sqlite", f"sqlite:///{tmp / 'bench.db'}"))
        try:
            print(f"{'backend':11} {'insert tx/s':>11} {'seat draft/s':>12} {'open311/s':>10} {'ratio':>6} "
                  f"{'seat x8/s':>10} {'open311 x8/s':>12} {'ratio':>6}")
            for name, url in backends:
                r = await run_backend(name, url, args.n, tmp)
                print(f"{name:11} {r['insert']:11.1f} {r['seat draft']:12.1f} {r['open311']:10.1f} "
                      f"{r['open311'] / r['seat draft']:6.2f} {r['seat draft x8']:10.1f} {r['open311 x8']:12.1f} "
                      f"{r['open311 x8'] / r['seat draft x8']:6.2f}")
        finally:
            if backends and backends[0][0] == "postgresql":
                await _pg(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
