"""Case-submission throughput on SQLite and PostgreSQL, as ratios to a bare insert baseline in the same run.

One submission = create a draft (citizen lookup, number) + accept it (case, timeline, outbox, audit, points)
+ deliver it to the built-in workflow (立案, deadline, notice queued). The baseline is one single-row
INSERT transaction on the same database, so the ratio shows what the intake spine costs per case.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from core.app import build_context, register_core_checks, wire_domains
from core.cases import service
from core.cases.schemas import AcceptDraft, DraftCreate, Reporter
from core.migrate import upgrade
from core.models import ProcessedKey
from core.settings import Settings

PG_ADMIN = os.environ.get("INTAKE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def run_backend(name: str, url: str, n: int, tmp: Path) -> tuple[float, float]:
    """Return (baseline inserts/s, submissions/s)."""
    settings = Settings(env="test", database_url=url, var_dir=tmp / name, outbox_worker=False)
    await asyncio.to_thread(upgrade, settings.database_url)
    async with httpx.AsyncClient() as http:
        ctx = build_context(settings, http=http)
        register_core_checks(ctx)
        wire_domains(ctx)
        try:
            start = time.perf_counter()
            for i in range(n):
                async with ctx.uow() as session:
                    session.add(ProcessedKey(scope="bench", key=f"{uuid.uuid4().hex}-{i}"))
            baseline = n / (time.perf_counter() - start)

            start = time.perf_counter()
            for i in range(n):
                async with ctx.uow() as session:
                    draft = await service.create_draft(session=session, kb=ctx.kb, data=DraftCreate(
                        text=f"解放路{i}号门口垃圾堆积，气味很大", reporter=Reporter(phone=f"1380000{i % 10000:04d}")))
                async with ctx.uow() as session:
                    await service.accept_draft(session=session, kb=ctx.kb, draft_id=draft.id,
                                               data=AcceptDraft(case_type_code="06010"), operator=None)
            await ctx.outbox.drain(max_seconds=600)
            submissions = n / (time.perf_counter() - start)
        finally:
            await ctx.bus.stop()
            await ctx.engine.dispose()
    return baseline, submissions


async def main() -> None:
    """Measure both backends and print ratios."""
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=300, help="submissions per backend")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        backends = [("sqlite", f"sqlite:///{tmp / 'bench.db'}")]
        pg_name = f"intake_bench_{uuid.uuid4().hex[:8]}"
        try:
            await _pg(f'CREATE DATABASE "{pg_name}"')
            backends.append(("postgresql", PG_ADMIN.rsplit("/", 1)[0] + f"/{pg_name}"))
        except Exception as err:  # noqa: BLE001
            print(f"postgresql: skipped ({err})")
        try:
            print(f"{'backend':12} {'baseline tx/s':>14} {'submissions/s':>14} {'ratio':>7}")
            for name, url in backends:
                baseline, subs = await run_backend(name, url, args.n, tmp)
                print(f"{name:12} {baseline:14.1f} {subs:14.1f} {subs / baseline:7.3f}")
        finally:
            if len(backends) > 1:
                await _pg(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
