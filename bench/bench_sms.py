"""SMS outbox throughput to a real Kannel, and the latency it adds per message, against raw sendsms calls.

Kannel (Debian's bearerbox + smsbox) runs with fakesmsc as the SMSC; the app is served by uvicorn so Kannel's
delivery reports reach it. Per backend (SQLite, and PostgreSQL when reachable) the run measures:

- baseline: the Kannel provider's sendsms call alone, one after the other (no database, no outbox);
- outbox:   N SMS queued (one transaction each, as a notice is), then the outbox drained to Kannel;
- latency:  one SMS at a time, from the committed queue entry to Kannel's acceptance, minus the baseline;
- delivered: N SMS from queue entry until every delivery report is recorded (the full loop through Kannel).

Run: .venv/bin/python bench/bench_sms.py [-n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import func, select

from core.app import create_app
from core.migrate import upgrade
from core.settings import Settings
from sms.client import SmsMessage
from sms.kannel_box import KannelBox, free_port, kannel_installed
from sms.models import SmsReceipt, SmsSend, SmsStatus
from sms.service import gateway_reference

PG_ADMIN = os.environ.get("INTAKE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TOKEN = "bench-callback-token-0123456789"


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class Served:
    """The app on a port (for Kannel's delivery reports), driven from this thread through its loop."""

    def __init__(self, settings: Settings, port: int) -> None:
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                                    log_level="warning", access_log=False))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.server.serve(),),
                                       daemon=True)

    def start(self) -> Served:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return self

    @property
    def ctx(self) -> Any:
        return self.server.lifespan.state["ctx"]

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=600)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def phone(i: int) -> str:
    """Distinct numbers, so the per-number rate limit does not shape the measurement."""
    return f"+86138{i:08d}"


async def queue(ctx: Any, keys: list[str], offset: int) -> None:
    for i, key in enumerate(keys):
        async with ctx.uow() as session:
            await ctx.sms.queue_text(session=session, to=phone(offset + i), key=key,
                                     text=f"您反映的问题已受理，案件号{2611220000000 + offset + i}。")


async def count(ctx: Any, keys: list[str], statuses: tuple[SmsStatus, ...]) -> int:
    async with ctx.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(SmsSend).where(
            SmsSend.key.in_(keys), SmsSend.status.in_(statuses))) or 0)


def wait_receipts(app: Served, keys: list[str], expected: int) -> None:
    """Wait until Kannel's delivery reports (accepted + delivered) for these keys are recorded."""

    async def _count() -> int:
        async with app.ctx.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(SmsReceipt).where(
                SmsReceipt.reference.in_(keys))) or 0)

    end = time.perf_counter() + 60
    while app.run(_count()) < expected:
        if time.perf_counter() > end:
            raise TimeoutError("delivery reports missing")
        time.sleep(0.005)


def measure(name: str, url: str, n: int, tmp: Path) -> dict[str, float]:
    """Run the four measurements on one database backend."""
    app_port = free_port()
    box = KannelBox(workdir=tmp / f"kannel-{name}",
                    incoming_url=f"http://127.0.0.1:{app_port}/sms/kannel/incoming/{TOKEN}")
    box.start(smsc=False)
    box.start_smsc(interactive=False)
    settings = Settings(env="test", database_url=url, var_dir=tmp / name, outbox_worker=False,
                        sms_provider="kannel", sms_kannel_url=box.sendsms_url, sms_kannel_username=box.username,
                        sms_kannel_password=box.password, sms_callback_token=TOKEN,
                        sms_public_base_url=f"http://127.0.0.1:{app_port}", sms_quiet_hours_enabled=False,
                        log_level="WARNING")
    upgrade(settings.database_url)
    app = Served(settings, app_port).start()
    result: dict[str, float] = {}
    try:
        # Baseline: the provider's own sendsms call (same headers, dlr-url included), no database, no outbox.
        async def direct(i: int, key: str) -> float:
            t0 = time.perf_counter()
            await app.ctx.sms.sender.send(SmsMessage(to=phone(i), text=f"【示例城管】基线短信{i}", template="text",
                                                     params={}, idempotency_key=key))
            return time.perf_counter() - t0

        keys = [f"base-{uuid.uuid4().hex}" for _ in range(n)]
        start = time.perf_counter()
        for i, key in enumerate(keys):
            app.run(direct(i, key))
        result["baseline_per_s"] = n / (time.perf_counter() - start)
        wait_receipts(app, keys, 2 * n)
        latencies = []
        for i in range(min(n, 100)):
            key = f"base1-{uuid.uuid4().hex}"
            latencies.append(app.run(direct(i, key)))
            wait_receipts(app, [key], 2)  # measured alone, not next to the previous message's receipts
        result["baseline_ms"] = statistics.mean(latencies) * 1000

        # Outbox throughput: queue N, then drain them all to Kannel.
        keys = [f"bench-{uuid.uuid4().hex}" for _ in range(n)]
        app.run(queue(app.ctx, keys, offset=0))
        start = time.perf_counter()
        app.run(app.ctx.outbox.drain(max_seconds=600))
        result["outbox_per_s"] = n / (time.perf_counter() - start)
        accepted = (SmsStatus.SUBMITTED, SmsStatus.DELIVERED)
        assert app.run(count(app.ctx, keys, accepted)) == n

        # Added latency: one SMS at a time, queue entry committed → accepted by Kannel (then its receipts settle).
        single = []
        for i in range(min(n, 100)):
            key = [f"lat-{uuid.uuid4().hex}"]
            t0 = time.perf_counter()
            app.run(queue(app.ctx, key, offset=n + i))
            app.run(app.ctx.outbox.drain(max_seconds=60))
            single.append(time.perf_counter() - t0)
            wait_receipts(app, [gateway_reference(key[0])], 2)
        result["outbox_ms"] = statistics.mean(single) * 1000

        # Delivered: the full loop, queue entries until every delivery report is in.
        keys = [f"dlr-{uuid.uuid4().hex}" for _ in range(n)]
        start = time.perf_counter()
        app.run(queue(app.ctx, keys, offset=2 * n))
        app.run(app.ctx.outbox.drain(max_seconds=600))
        while app.run(count(app.ctx, keys, (SmsStatus.DELIVERED,))) < n:
            if time.perf_counter() - start > 600:
                raise TimeoutError("delivery reports did not all arrive")
            time.sleep(0.05)
        result["delivered_per_s"] = n / (time.perf_counter() - start)
    finally:
        app.stop()
        box.cleanup()
    return result


def main() -> None:
    """Measure each backend and print absolute numbers and ratios to the baseline."""
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=300, help="messages per measurement")
    args = parser.parse_args()
    if not kannel_installed():
        sys.exit("bench_sms needs Debian's kannel and kannel-extras (scripts/system-deps.sh)")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        backends = [("sqlite", f"sqlite:///{tmp / 'bench.db'}")]
        pg_name = f"intake_bench_{uuid.uuid4().hex[:8]}"
        try:
            asyncio.run(_pg(f'CREATE DATABASE "{pg_name}"'))
            backends.append(("postgresql", f"{PG_ADMIN.rsplit('/', 1)[0]}/{pg_name}"))
        except Exception as err:  # noqa: BLE001 - PostgreSQL is optional for a local run
            print(f"postgresql skipped: {err}")
        try:
            for name, url in backends:
                r = measure(name, url, args.n, tmp)
                print(f"{name:10} baseline sendsms: {r['baseline_per_s']:7.1f} msg/s, {r['baseline_ms']:6.2f} ms/msg")
                print(f"{name:10} outbox → Kannel: {r['outbox_per_s']:7.1f} msg/s "
                      f"(×{r['outbox_per_s'] / r['baseline_per_s']:.2f} of baseline)")
                print(f"{name:10} one at a time:   {r['outbox_ms']:6.2f} ms/msg, "
                      f"+{r['outbox_ms'] - r['baseline_ms']:.2f} ms added (×{r['outbox_ms'] / r['baseline_ms']:.1f})")
                print(f"{name:10} until delivered: {r['delivered_per_s']:7.1f} msg/s "
                      f"(×{r['delivered_per_s'] / r['baseline_per_s']:.2f} of baseline)")
        finally:
            if len(backends) > 1:
                asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
