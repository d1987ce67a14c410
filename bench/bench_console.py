"""Console speed on PostgreSQL with 100k cases: page render p95, and live-event fan-out to 300 subscribers.

Targets (issue): workspace and dashboard p95 < 150 ms with 100k cases; 300 concurrent live-event
subscribers all receive an event within 1 s. Page times are printed with their ratio to GET /healthz
(the bare framework round trip) measured against the same server in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

PG_ADMIN = os.environ.get("INTAKE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD = "bench-password-1"


async def seed(url: str, cases: int) -> None:
    """Insert `cases` accepted drafts with their cases and timelines, plus 150 open drafts of today."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"""
            INSERT INTO draft_cases (number, channel, status, raw_text, media, citizen_id, created_at, updated_at)
            SELECT 'B' || g, (ARRAY['hotline','wechat','sms','api'])[1 + g % 4], 'accepted',
                   '第' || g || '号 人民路附近垃圾堆积，气味很大', '[]'::jsonb, NULL,
                   now() - (g || ' minutes')::interval, now()
            FROM generate_series(1, {cases}) g;
            INSERT INTO cases (draft_id, submit_key, number, state, step, last_event_seq, case_type_code,
                               major_code, description, address, channel, urgent, created_at, updated_at)
            SELECT d.id, 'draft-' || d.id, '2026' || lpad(d.id::text, 9, '0'),
                   (ARRAY['open','closed'])[1 + d.id % 2], (ARRAY['dispatch','close'])[1 + d.id % 2], 2,
                   (ARRAY['06010','09006','01002','06028','08001'])[1 + d.id % 5], '06', d.raw_text,
                   '人民路' || d.id || '号', d.channel, false, d.created_at, now()
            FROM draft_cases d WHERE d.number LIKE 'B%';
            INSERT INTO case_events (case_id, event_key, step, at, attachments)
            SELECT c.id, 'wf:' || s.seq, (ARRAY['register','dispatch'])[s.seq], c.created_at, '[]'::jsonb
            FROM cases c CROSS JOIN (VALUES (1), (2)) AS s(seq);
            INSERT INTO draft_cases (number, channel, status, raw_text, media, created_at, updated_at)
            SELECT 'T' || g, 'wechat', 'pending_review', '今天的第' || g || '条反映：井盖松动', '[]'::jsonb,
                   now() - (g || ' seconds')::interval, now()
            FROM generate_series(1, 150) g;
            ANALYZE;
        """)
    finally:
        await conn.close()


async def page_times(client: httpx.AsyncClient, path: str, n: int) -> list[float]:
    """Return the latencies of n sequential GETs in milliseconds."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        response = await client.get(path)
        response.raise_for_status()
        times.append((time.perf_counter() - start) * 1000)
    return times


def p95(values: list[float]) -> float:
    """95th percentile."""
    return statistics.quantiles(values, n=20)[18]


async def fanout(url: str, cookies: httpx.Cookies, token: str, subscribers: int) -> float:
    """Open `subscribers` event streams, create one draft, return the seconds until the last one got it."""
    limits = httpx.Limits(max_connections=subscribers + 10)
    async with httpx.AsyncClient(base_url=url, cookies=cookies, timeout=30, limits=limits) as client:
        ready = asyncio.Event()
        connected = 0
        received: list[float] = []

        async def listen() -> None:
            nonlocal connected
            async with client.stream("GET", "/api/events") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith(": connected"):
                        connected += 1
                        if connected == subscribers:
                            ready.set()
                    if line.startswith("event: draft.created"):
                        received.append(time.perf_counter())
                        return

        tasks = [asyncio.create_task(listen()) for _ in range(subscribers)]
        await asyncio.wait_for(ready.wait(), timeout=60)
        await asyncio.sleep(0.5)
        start = time.perf_counter()
        await client.post("/api/drafts", json={"text": "扇出测试"}, headers={"X-CSRF-Token": token})
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        return max(received) - start


async def main() -> None:
    """Seed, serve, measure, print."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--subscribers", type=int, default=300)
    args = parser.parse_args()
    name = f"intake_console_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    db_url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    intake = str(Path(sys.executable).with_name("intake"))
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "INTAKE_DATABASE_URL": db_url, "INTAKE_VAR_DIR": tmp, "INTAKE_LOG_LEVEL": "WARNING",
               "INTAKE_ENV": "test"}
        await asyncio.to_thread(subprocess.run, [intake, "db", "upgrade"], env=env, check=True, capture_output=True)
        await asyncio.to_thread(subprocess.run, [intake, "admin", "create", "--username", "bench", "--password",
                                                 PASSWORD], env=env, check=True, capture_output=True)
        start = time.perf_counter()
        await seed(db_url, args.cases)
        print(f"seeded {args.cases} cases in {time.perf_counter() - start:.1f} s")
        port = 18000 + os.getpid() % 1000
        proc = subprocess.Popen([intake, "serve", "--port", str(port)], env=env,  # noqa: ASYNC220 - starts at once
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                for _ in range(100):
                    try:
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        await asyncio.sleep(0.1)
                login = await client.post("/api/session", json={"username": "bench", "password": PASSWORD})
                token = login.json()["csrf_token"]
                for path in ("/", "/dashboard", "/cases?q=人民路"):
                    await page_times(client, path, 3)  # warm caches and the kb index
                base = await page_times(client, "/healthz", args.requests)
                print(f"{'page':22} {'p50 ms':>8} {'p95 ms':>8} {'p95 / healthz':>14}")
                print(f"{'/healthz (baseline)':22} {statistics.median(base):8.1f} {p95(base):8.1f} {1.0:14.1f}")
                for path in ("/", "/dashboard", "/api/dashboard", "/cases?q=人民路"):
                    times = await page_times(client, path, args.requests)
                    print(f"{path:22} {statistics.median(times):8.1f} {p95(times):8.1f} {p95(times) / p95(base):14.1f}")
                one = await fanout(url, client.cookies, token, 1)
                many = await fanout(url, client.cookies, token, args.subscribers)
                print(f"live event to 1 subscriber: {one * 1000:.0f} ms; to {args.subscribers} subscribers: "
                      f"{many * 1000:.0f} ms (ratio {many / max(one, 1e-6):.1f}; target < 1000 ms)")
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 15)
            admin = await asyncpg.connect(PG_ADMIN)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
