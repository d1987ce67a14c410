"""The outbox: ordering per key, retries with backoff, permanent failures, one claim per job."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from core.db import make_engine, make_sessionmaker
from core.models import OutboxJob, OutboxStatus
from core.outbox import OutboxWorker, PermanentFailure, backoff_seconds, enqueue
from tests.conftest import make_settings


@pytest.fixture
async def sessions(db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = make_settings(db_url, tmp_path)
    engine = make_engine(settings)
    yield settings, make_sessionmaker(engine)
    await engine.dispose()


async def test_jobs_of_one_key_run_in_order_even_across_failures(sessions) -> None:  # type: ignore[no-untyped-def]
    settings, maker = sessions
    seen: list[str] = []
    fail_first = {"a1": 2}

    async def handler(job: OutboxJob) -> None:
        name = job.payload["name"]
        if fail_first.get(name, 0) > 0:
            fail_first[name] -= 1
            raise RuntimeError("peer down")
        seen.append(name)

    async with maker() as session, session.begin():
        for name, key in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("a3", "a"), ("b2", "b")]:
            await enqueue(session=session, kind="t", payload={"name": name}, idempotency_key=name, ordering_key=key)
    worker = OutboxWorker(sessions=maker, settings=settings)
    worker.register("t", handler)
    for _ in range(50):
        await worker.run_once()
        if len(seen) == 5:
            break
        await asyncio.sleep(0.05)
    assert [s for s in seen if s.startswith("a")] == ["a1", "a2", "a3"]
    assert [s for s in seen if s.startswith("b")] == ["b1", "b2"]
    assert seen.index("b1") < seen.index("a1")  # b was not held up by a's failures


async def test_permanent_failure_stops_and_idempotent_enqueue(sessions) -> None:  # type: ignore[no-untyped-def]
    settings, maker = sessions

    async def handler(job: OutboxJob) -> None:
        raise PermanentFailure("invalid number")

    async with maker() as session, session.begin():
        first = await enqueue(session=session, kind="t", payload={}, idempotency_key="k1")
        again = await enqueue(session=session, kind="t", payload={}, idempotency_key="k1")
        assert first.id == again.id
    worker = OutboxWorker(sessions=maker, settings=settings)
    worker.register("t", handler)
    await worker.run_once()
    async with maker() as session:
        job = await session.scalar(select(OutboxJob))
        assert job is not None and job.status == OutboxStatus.DEAD and job.attempts == 1
        assert "invalid number" in (job.last_error or "")


async def test_concurrent_workers_never_run_a_job_twice(sessions) -> None:  # type: ignore[no-untyped-def]
    settings, maker = sessions
    runs: list[int] = []

    async def handler(job: OutboxJob) -> None:
        runs.append(job.id)
        await asyncio.sleep(0.001)

    async with maker() as session, session.begin():
        for i in range(60):
            await enqueue(session=session, kind="t", payload={}, idempotency_key=f"j{i}")
    workers = [OutboxWorker(sessions=maker, settings=settings) for _ in range(4)]
    for w in workers:
        w.register("t", handler)
    for _ in range(20):
        await asyncio.gather(*(w.run_once() for w in workers))
    assert sorted(runs) == sorted(set(runs)) and len(runs) == 60


def test_backoff_grows_and_is_capped() -> None:
    assert backoff_seconds(1, base=1, cap=300) <= 2
    assert 150 <= backoff_seconds(30, base=1, cap=300) <= 300
