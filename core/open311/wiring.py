"""Open API wiring: the webhook sender, the delivery handler, the case-step hook and the closure sweep."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.cases.models import Case, Step
from core.context import AppContext
from core.db import utcnow
from core.models import OutboxJob
from core.open311 import service
from core.open311.client import HttpxWebhookSender, WebhookSender
from core.open311.models import ApiClient, DeliveryStatus, WebhookDelivery
from core.status import ComponentStatus, Health

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Open311Runtime:
    """Long-lived parts of the open API in one process (stored as `ctx.open311`)."""

    sender: WebhookSender
    bounds: service.Bounds | None
    base_url: str
    clock: Callable[[], dt.datetime] = utcnow  # tests move time to cross rate-limit windows
    sweeper: asyncio.Task[None] | None = field(default=None, repr=False)

    async def close(self) -> None:
        """Stop the sweep and close the HTTP pool."""
        if self.sweeper is not None:
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper
            self.sweeper = None
        await self.sender.aclose()


def runtime_of(ctx: AppContext) -> Open311Runtime:
    """Return the wired runtime (the app always wires it; a missing one is a programming error)."""
    if ctx.open311 is None:
        raise RuntimeError("core.open311 is not wired")
    return cast(Open311Runtime, ctx.open311)


async def sweep_once(ctx: AppContext) -> int:
    """Notify clients about drafts closed without a workflow step; return how many requests were looked at."""
    runtime = runtime_of(ctx)
    async with ctx.uow() as session:
        return await service.sweep_closed_drafts(session=session, kb=ctx.kb, base_url=runtime.base_url)


async def _sweep_loop(ctx: AppContext, every: float) -> None:
    while True:
        try:
            if await sweep_once(ctx):
                continue  # more may be waiting
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - the loop must survive a database outage
            log.warning("open311 closure sweep failed: %s: %s", type(err).__name__, err)
        await asyncio.sleep(every)


def wire(ctx: AppContext) -> None:
    """Build the sender, register the delivery handler, the step hook, the sweep and the /status check."""
    settings = ctx.settings
    bounds = service.parse_bounds(settings.open311_bounds)
    if settings.open311_photo_max_bytes + 65_536 > settings.max_body_bytes:
        log.warning("INTAKE_OPEN311_PHOTO_MAX_BYTES (%d) is close to INTAKE_MAX_BODY_BYTES (%d): larger uploads get "
                    "the generic 413 instead of the Open311 error", settings.open311_photo_max_bytes,
                    settings.max_body_bytes)
    runtime = Open311Runtime(
        sender=HttpxWebhookSender(timeout=settings.open311_webhook_timeout_seconds,
                                  allow_private=settings.open311_webhook_allow_private),
        bounds=bounds, base_url=(settings.open311_public_base_url or "").rstrip("/"),
    )
    ctx.open311 = runtime
    ctx.closers.append(runtime.close)

    async def deliver(job: OutboxJob) -> None:
        await service.run_delivery(sessions=ctx.sessions, sender=runtime.sender,
                                   delivery_id=int(job.payload["delivery_id"]),
                                   max_attempts=settings.open311_webhook_max_attempts)

    async def on_step(*, session: AsyncSession, case: Case, step: Step, seq: int) -> None:
        await service.on_case_step(session=session, case=case, step=step, seq=seq, kb=ctx.kb,
                                   base_url=runtime.base_url)

    async def check() -> ComponentStatus:
        since = utcnow() - dt.timedelta(days=1)
        async with ctx.sessions() as session:
            clients = await session.scalar(select(func.count()).select_from(ApiClient).where(ApiClient.active))
            failed = await session.scalar(select(func.count()).select_from(WebhookDelivery).where(
                WebhookDelivery.status == DeliveryStatus.FAILED, WebhookDelivery.created_at >= since))
        # A partner's broken receiver is their problem, not an outage of ours: report, never FAIL.
        return ComponentStatus(Health.OK, f"{clients or 0} active API clients, {failed or 0} failed deliveries in 24h")

    ctx.outbox.register(service.DELIVERY_KIND, deliver)
    ctx.notices.on_step(on_step)
    ctx.status.register("open_api", check)
    if settings.outbox_worker and settings.open311_sweep_seconds > 0:
        runtime.sweeper = asyncio.get_running_loop().create_task(
            _sweep_loop(ctx, settings.open311_sweep_seconds), name="open311-sweep")
