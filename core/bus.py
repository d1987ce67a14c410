"""Live event bus: in-process by default, Redis pub/sub when several app processes share the work."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

CHANNEL = "intake:events"
SUBSCRIBER_QUEUE = 1000


@dataclass(frozen=True, slots=True)
class Event:
    """A live notification: a topic such as `draft.created` and a small JSON payload."""

    topic: str
    data: dict[str, Any] = field(default_factory=dict)
    origin: str = ""


class EventBus(Protocol):
    """Publish live events to every subscriber in every process."""

    async def publish(self, topic: str, data: dict[str, Any]) -> None:
        """Send an event to all subscribers."""
        ...

    def subscribe(self) -> AsyncIterator[Event]:
        """Yield events until the consumer stops iterating."""
        ...

    async def start(self) -> None:
        """Open connections and start listening."""
        ...

    async def stop(self) -> None:
        """Close connections."""
        ...

    async def check(self) -> bool:
        """Tell whether the bus can deliver events now."""
        ...


class _FanOut:
    """Deliver events to local subscriber queues; slow subscribers lose old events, never block others."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Event]] = set()

    def deliver(self, event: Event) -> None:
        for queue in list(self._queues):
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._queues)


class InProcessBus:
    """The embedded default: events reach subscribers of this process only."""

    def __init__(self) -> None:
        """Create an empty bus."""
        self.process_id = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._fanout = _FanOut()

    async def publish(self, topic: str, data: dict[str, Any]) -> None:
        """Deliver to local subscribers."""
        self._fanout.deliver(Event(topic, data, self.process_id))

    def subscribe(self) -> AsyncIterator[Event]:
        """Yield local events."""
        return self._fanout.subscribe()

    async def start(self) -> None:
        """Nothing to open."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def check(self) -> bool:
        """Always available."""
        return True


class RedisBus:
    """Events travel through one Redis pub/sub channel, so every process sees every event."""

    def __init__(self, url: str) -> None:
        """Remember the URL; connections open in `start`."""
        import redis.asyncio as aioredis

        self.process_id = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._redis = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3)
        self._fanout = _FanOut()
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def publish(self, topic: str, data: dict[str, Any]) -> None:
        """Publish through Redis; fall back to local delivery when Redis is down, so this process still sees it."""
        message = json.dumps({"topic": topic, "data": data, "origin": self.process_id}, ensure_ascii=False)
        try:
            await self._redis.publish(CHANNEL, message)
        except Exception as err:  # noqa: BLE001 - redis raises several unrelated types
            log.warning("redis publish failed (%s); delivering %s locally only", type(err).__name__, topic)
            self._fanout.deliver(Event(topic, data, self.process_id))

    def subscribe(self) -> AsyncIterator[Event]:
        """Yield events from all processes."""
        return self._fanout.subscribe()

    async def start(self) -> None:
        """Start the listener and wait briefly until it is subscribed."""
        self._task = asyncio.create_task(self._listen(), name="redis-bus-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout=3)

    async def stop(self) -> None:
        """Stop listening and close the connection pool."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()

    async def check(self) -> bool:
        """Ping Redis."""
        try:
            return bool(await self._redis.ping())
        except Exception:  # noqa: BLE001
            return False

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(CHANNEL)
                self._connected.set()
                delay = 0.5
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        raw = json.loads(message["data"])
                        event = Event(str(raw["topic"]), dict(raw.get("data") or {}), str(raw.get("origin", "")))
                    except (ValueError, KeyError, TypeError):
                        log.warning("ignored a malformed event on %s", CHANNEL)
                        continue
                    self._fanout.deliver(event)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - reconnect on any transport failure
                self._connected.clear()
                log.warning("redis bus listener lost its connection (%s); retrying", type(err).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)


def make_bus(redis_url: str | None) -> EventBus:
    """Pick the bus implementation from the settings."""
    return RedisBus(redis_url) if redis_url else InProcessBus()
