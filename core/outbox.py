"""Transactional outbox: jobs are written with the data that caused them and delivered until done."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from core.db import utcnow
from core.models import OutboxJob, OutboxStatus
from core.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[OutboxJob], Awaitable[None]]

JOBS_DONE = Counter("intake_outbox_jobs_done_total", "Outbox jobs delivered", ["kind"])
JOBS_FAILED = Counter("intake_outbox_attempts_failed_total", "Failed delivery attempts", ["kind", "final"])
JOBS_PENDING = Gauge("intake_outbox_pending", "Outbox jobs waiting for delivery")


class PermanentFailure(Exception):
    """Delivery can never succeed (invalid address, rejected data): stop retrying."""


class TemporaryFailure(Exception):
    """Delivery failed for now (timeout, 5xx, gateway down): retry with backoff."""


async def enqueue(
    *,
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any],
    idempotency_key: str,
    ordering_key: str | None = None,
    not_before: dt.datetime | None = None,
) -> OutboxJob:
    """Add a job in the caller's transaction, or return the job already queued under the same key."""
    existing = await session.scalar(select(OutboxJob).where(OutboxJob.idempotency_key == idempotency_key))
    if existing is not None:
        return existing
    job = OutboxJob(
        kind=kind,
        payload=payload,
        idempotency_key=idempotency_key,
        ordering_key=ordering_key,
        next_attempt_at=not_before or utcnow(),
    )
    session.add(job)
    await session.flush()
    session.info["outbox_dirty"] = True
    return job


def backoff_seconds(attempts: int, *, base: float, cap: float) -> float:
    """Exponential backoff with full jitter, so many failed jobs do not retry in lockstep."""
    ceiling = min(cap, base * (2 ** min(attempts, 20)))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security


class OutboxWorker:
    """Claims due jobs with a lease, runs their handler, records the outcome; safe with many processes."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        """Prepare a worker; handlers are registered by the domain wiring."""
        self._sessions = sessions
        self._settings = settings
        self._handlers: dict[str, Handler] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.worker_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.last_error: str | None = None

    def register(self, kind: str, handler: Handler) -> None:
        """Route jobs of `kind` to `handler`."""
        self._handlers[kind] = handler

    def wake(self) -> None:
        """Run the next batch now instead of at the next poll."""
        self._wake.set()

    def start(self) -> None:
        """Start the background loop."""
        self._task = asyncio.create_task(self._loop(), name="outbox-worker")

    async def stop(self) -> None:
        """Stop the loop; jobs in flight keep their lease and are retried after it expires."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                done = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - the loop must survive a database outage
                self.last_error = f"{type(err).__name__}: {err}"
                log.warning("outbox batch failed: %s", self.last_error)
                done = 0
            if done:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._settings.outbox_poll_seconds)

    async def run_once(self) -> int:
        """Claim and run one batch of due jobs; return how many were attempted."""
        jobs = await self._claim(self._settings.outbox_batch)
        if self._settings.is_sqlite:
            # SQLite has one writer: concurrent jobs would only queue on its lock and back off.
            for job in jobs:
                await self._run(job)
        elif jobs:
            await asyncio.gather(*(self._run(job) for job in jobs))
        return len(jobs)

    async def drain(self, *, max_seconds: float = 30.0) -> None:
        """Run batches until no job is due (for tests and the CLI)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + max_seconds
        while loop.time() < end:
            if not await self.run_once():
                return
        raise TimeoutError("outbox still has due jobs")

    async def _claim(self, limit: int) -> list[OutboxJob]:
        now = utcnow()
        earlier = aliased(OutboxJob)
        # Only the oldest unfinished job of each ordering key is eligible: per-case order is kept.
        blocked = (
            exists()
            .where(earlier.ordering_key == OutboxJob.ordering_key)
            .where(earlier.status == OutboxStatus.PENDING)
            .where(earlier.id < OutboxJob.id)
        )
        free = or_(OutboxJob.locked_until.is_(None), OutboxJob.locked_until < now)
        lease = now + dt.timedelta(seconds=self._settings.outbox_lease_seconds)
        claimed: list[OutboxJob] = []
        async with self._sessions() as session, session.begin():
            candidates = list(
                await session.scalars(
                    select(OutboxJob.id)
                    .where(OutboxJob.status == OutboxStatus.PENDING, OutboxJob.next_attempt_at <= now, free)
                    .where(or_(OutboxJob.ordering_key.is_(None), ~blocked))
                    .order_by(OutboxJob.id)
                    .limit(limit)
                )
            )
            for job_id in candidates:
                # The conditional update is the lock: only one process can move the lease forward.
                result = await session.execute(
                    update(OutboxJob)
                    .where(OutboxJob.id == job_id, OutboxJob.status == OutboxStatus.PENDING, free)
                    .values(locked_by=self.worker_id, locked_until=lease)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    job = await session.get(OutboxJob, job_id)
                    if job is not None:
                        claimed.append(job)
        return claimed

    async def _run(self, job: OutboxJob) -> None:
        handler = self._handlers.get(job.kind)
        error: str | None = None
        final = False
        try:
            if handler is None:
                raise TemporaryFailure(f"no handler registered for {job.kind}")
            await asyncio.wait_for(handler(job), timeout=self._settings.outbox_lease_seconds / 2)
        except PermanentFailure as err:
            error, final = f"permanent: {err}", True
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - every other failure is retried
            error = f"{type(err).__name__}: {err}"
        now = utcnow()
        async with self._sessions() as session, session.begin():
            mine = (OutboxJob.id == job.id, OutboxJob.locked_by == self.worker_id)
            if error is None:
                await session.execute(
                    update(OutboxJob)
                    .where(*mine)
                    .values(
                        status=OutboxStatus.DONE,
                        done_at=now,
                        attempts=OutboxJob.attempts + 1,
                        locked_by=None,
                        locked_until=None,
                        last_error=None,
                    )
                )
                JOBS_DONE.labels(job.kind).inc()
                return
            attempts = job.attempts + 1
            final = final or attempts >= self._settings.outbox_max_attempts
            delay = backoff_seconds(
                attempts,
                base=self._settings.outbox_backoff_base_seconds,
                cap=self._settings.outbox_backoff_max_seconds,
            )
            await session.execute(
                update(OutboxJob)
                .where(*mine)
                .values(
                    status=OutboxStatus.DEAD if final else OutboxStatus.PENDING,
                    attempts=attempts,
                    next_attempt_at=now + dt.timedelta(seconds=delay),
                    locked_by=None,
                    locked_until=None,
                    last_error=error[:2000],
                )
            )
        JOBS_FAILED.labels(job.kind, str(final).lower()).inc()
        log.warning("outbox job %s (%s) attempt %d failed%s: %s", job.id, job.kind, attempts,
                    " for good" if final else "", error)

    async def counts(self) -> dict[str, int]:
        """Return the number of jobs per status (for /status and /metrics)."""
        async with self._sessions() as session:
            rows = await session.execute(select(OutboxJob.status, func.count()).group_by(OutboxJob.status))
            result = {str(status): int(n) for status, n in rows.all()}
        JOBS_PENDING.set(result.get(OutboxStatus.PENDING.value, 0))
        return result
