"""Citizen-visible step changes become notices; channel modules subscribe to deliver them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.cases.models import Case, Notification, Step
from core.models import Channel, Citizen
from core.outbox import enqueue

log = logging.getLogger(__name__)


class NoticeChannel(Protocol):
    """A way to reach a citizen (WeChat, SMS); registered by the channel module's wiring."""

    channel: Channel
    outbox_kind: str

    def address_for(self, citizen: Citizen) -> str | None:
        """Return where this channel reaches the citizen, or None if it cannot."""
        ...


@dataclass(frozen=True, slots=True)
class NoticeRequest:
    """A notice owed to the citizen of a case."""

    case: Case
    template: str
    step: Step | None
    params: dict[str, Any]
    key: str


class StepHook(Protocol):
    """Called inside the transaction of every new step of a case (e.g. to call a 12345 callback back)."""

    async def __call__(self, *, session: AsyncSession, case: Case, step: Step, seq: int) -> None:
        """React to the step; anything durable goes through the outbox in the same session."""
        ...


class NoticeRouter:
    """Chooses the channel for each notice (in subscription priority order) and queues it durably."""

    def __init__(self) -> None:
        """Start with no channels."""
        self._channels: list[tuple[int, NoticeChannel]] = []
        self._step_hooks: list[StepHook] = []

    def on_step(self, hook: StepHook) -> None:
        """Subscribe a hook to every new step of every case."""
        self._step_hooks.append(hook)

    async def step_changed(self, *, session: AsyncSession, case: Case, step: Step, seq: int) -> None:
        """Run the step hooks in the caller's transaction."""
        for hook in self._step_hooks:
            await hook(session=session, case=case, step=step, seq=seq)

    def subscribe(self, channel: NoticeChannel, *, priority: int) -> None:
        """Add a channel; lower priority numbers are tried first (WeChat before SMS)."""
        self._channels.append((priority, channel))
        self._channels.sort(key=lambda item: item[0])

    @property
    def channels(self) -> list[NoticeChannel]:
        """Subscribed channels in priority order."""
        return [channel for _, channel in self._channels]

    async def notify(self, *, session: AsyncSession, request: NoticeRequest) -> Notification | None:
        """Create the notification and its delivery job once; a replayed step change adds nothing."""
        existing = await session.scalar(select(Notification).where(Notification.dedupe_key == request.key))
        if existing is not None:
            return existing
        case = request.case
        citizen = await session.get(Citizen, case.citizen_id) if case.citizen_id else None
        if citizen is None or citizen.blocked:
            return None
        for channel in self.channels:
            address = channel.address_for(citizen)
            if not address:
                continue
            notification = Notification(
                dedupe_key=request.key,
                case_id=case.id,
                citizen_id=citizen.id,
                channel=channel.channel,
                address=address,
                template=request.template,
                step=request.step,
                params=request.params,
            )
            session.add(notification)
            await session.flush()
            await enqueue(
                session=session,
                kind=channel.outbox_kind,
                payload={"notification_id": notification.id},
                idempotency_key=f"notice:{notification.id}",
                ordering_key=f"notice:{citizen.id}",
            )
            return notification
        log.info("case %s: no channel reaches the citizen for %s", case.id, request.template)
        return None
