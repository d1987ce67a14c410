"""Asterisk Manager Interface client: panoramisk 1.4 behind a small protocol, with its pitfalls wrapped.

- every action has a timeout (panoramisk futures can stay pending forever after a drop or `close()`);
- Originate always carries an explicit `Async` (without it panoramisk raises KeyError in data_received);
- QueueAdd is sent `as_list=False` (1.4 misreads "Added interface to queue" as a multi-message reply);
- actions that were in flight when the link dropped fail at once instead of being re-sent after the
  reconnect (panoramisk would replay them on FullyBooted: a duplicate Originate is a duplicate call);
- a Ping watchdog drops half-open links (panoramisk's own ping never looks at the answer);
- the event handler never raises (an exception there kills panoramisk's connection) and only queues the
  event; one consumer reads the queue, and a `Reconnected` marker tells it to rebuild its state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from panoramisk import Manager, utils
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

log = logging.getLogger(__name__)

EVENT_CLASSES = "call,agent,user,system"
QUEUE_LIMIT = 50_000


class AmiError(Exception):
    """The PBX could not be asked (not connected, no answer in time, or it said no)."""


class AmiNotConnected(AmiError):
    """No logged-in AMI connection right now."""


class AmiTimeout(AmiError):
    """The PBX did not answer the action in time."""


class AmiActionFailed(AmiError):
    """The PBX answered the action with an error."""


@dataclass(frozen=True, slots=True)
class AmiEvent:
    """One AMI event (or list item of an action reply) as plain strings."""

    name: str
    headers: Mapping[str, str]
    variables: Mapping[str, str] = field(default_factory=dict)
    received_at: float = 0.0

    def get(self, key: str, default: str = "") -> str:
        """Return a header value ('' when absent)."""
        return self.headers.get(key, default)

    @property
    def at(self) -> float:
        """When Asterisk sent it (epoch s, from `timestampevents`), else when it was read."""
        stamp = self.headers.get("Timestamp")
        if stamp:
            try:
                return float(stamp)
            except ValueError:
                pass
        return self.received_at


@dataclass(frozen=True, slots=True)
class Reconnected:
    """Marker put on the event queue after every (re)login: the consumer must rebuild its state."""

    generation: int
    at: float
    lost_at: float | None = None  # when the previous link dropped (calls that vanished meanwhile end there)


@dataclass(frozen=True, slots=True)
class AmiReply:
    """The response of an action and the list events that came with it."""

    response: str
    message: str
    headers: Mapping[str, str]
    events: Sequence[AmiEvent] = ()


@dataclass(frozen=True, slots=True)
class OriginateResult:
    """How an asynchronous Originate ended: answered or not, Asterisk's reason code, the channel."""

    answered: bool
    reason: str
    channel: str
    uniqueid: str


class AmiClient(Protocol):
    """What the hotline needs from an AMI connection."""

    events: asyncio.Queue[AmiEvent | Reconnected]

    @property
    def connected(self) -> bool:
        """Logged in and answering pings."""
        ...

    @property
    def detail(self) -> str:
        """A short state description for /status."""
        ...

    async def start(self) -> None:
        """Connect in the background (reconnects forever until `stop`)."""
        ...

    async def stop(self) -> None:
        """Close the connection for good."""
        ...

    async def action(self, name: str, fields: Mapping[str, str | Sequence[str]] | None = None, *,
                     wait_seconds: float | None = None, as_list: bool | None = None) -> AmiReply:
        """Send an action and wait (at most `wait_seconds`, default the client's timeout) for its reply."""
        ...

    async def originate(self, *, channel: str, context: str, exten: str, caller_id: str,
                        variables: Mapping[str, str], channel_id: str, ring_timeout: float = 30) -> OriginateResult:
        """Place a call (always `Async: true`) and wait until it is answered or has failed."""
        ...


STRING_LISTS = ("ChanVariable", "DestChanVariable")


def _variables(value: Any) -> dict[str, str]:
    # One ChanVariable arrives as a string, several as a list (panoramisk's getdict() fails on one).
    items = value if isinstance(value, list) else [value]
    result = {}
    for item in items:
        name, sep, val = str(item).partition("=")
        if sep:
            result[name] = val
    return result


def to_event(message: Mapping[str, Any], *, received_at: float | None = None) -> AmiEvent:
    """Convert a panoramisk Message (or any header mapping) into an AmiEvent."""
    headers: dict[str, str] = {}
    variables: dict[str, str] = {}
    for key, value in message.items():
        if key == "content":
            continue
        if key == "ChanVariable":
            variables.update(_variables(value))
        elif key == "DestChanVariable":
            for name, val in _variables(value).items():
                variables.setdefault(f"Dest:{name}", val)
        elif isinstance(value, list):
            headers[key] = str(value[0]) if value else ""
        else:
            headers[key] = str(value)
    name = headers.get("Event", "")
    return AmiEvent(name=name, headers=headers, variables=variables,
                    received_at=time.time() if received_at is None else received_at)


def parse_event(raw: str, *, received_at: float, eol: str = "\r\n") -> AmiEvent:
    """Parse one event block straight into an AmiEvent (the fast path: no panoramisk Message in between)."""
    headers: dict[str, str] = {}
    variables: dict[str, str] = {}
    for line in raw.split(eol):
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        if key == "ChanVariable":
            name, _, val = value.partition("=")
            variables[name] = val
        elif key == "DestChanVariable":
            name, _, val = value.partition("=")
            variables.setdefault(f"Dest:{name}", val)
        elif key not in headers:
            headers[key] = value
    return AmiEvent(name=headers.get("Event", ""), headers=headers, variables=variables, received_at=received_at)


# Events panoramisk itself acts on (reconnect on Shutdown, replay on FullyBooted) keep its own path.
SLOW_PATH_EVENTS = ("Event: Shutdown", "Event: FullyBooted")


class _FastProtocol(AMIProtocol):  # type: ignore[misc]
    """panoramisk's AMI protocol, with unsolicited events parsed once, straight into AmiEvents.

    Replies to actions (and their list items, which carry an ActionID) still go through panoramisk, so action
    futures behave as before; only the event firehose skips its Message/CaseInsensitiveDict layers, which cost
    five times more than the call tracker itself.
    """

    def __init__(self, sink: Callable[[AmiEvent], None]) -> None:
        super().__init__()
        self._sink = sink

    def data_received(self, data: bytes) -> None:
        text = data.decode(getattr(self, "encoding", "utf8"), "ignore")
        eol = utils.EOL
        if getattr(self, "version", None) is None and text.startswith("Asterisk Call Manager/"):
            self.version = text.partition(eol)[0].partition("/")[2].strip()
        if self.queue:
            text = self.queue.popleft() + text
        blocks = text.split(eol + eol)
        self.queue.append(blocks.pop())
        now = time.time()
        for block in blocks:
            block = block.strip()
            if block.startswith("Event: ") and f"{eol}ActionID: " not in block \
                    and not block.startswith(SLOW_PATH_EVENTS):
                try:
                    self._sink(parse_event(block, received_at=now, eol=eol))
                except Exception:  # noqa: BLE001 - never let one odd event kill the connection
                    log.exception("could not read an AMI event")
                continue
            message = Message.from_line(block)
            if message is not None:
                self.handle_message(message)


def _reply(result: Any) -> AmiReply:
    messages: list[Any] = list(result) if isinstance(result, list) else [result]
    first = messages[0]
    headers = {k: (str(v[0]) if isinstance(v, list) and v else str(v)) for k, v in first.items()}
    events = [to_event(m) for m in messages[1:]]
    return AmiReply(response=headers.get("Response", ""), message=headers.get("Message", ""), headers=headers,
                    events=events)


class PanoramiskAmi:
    """The AMI connection of one app process (panoramisk is imported by this module only)."""

    def __init__(self, *, host: str, port: int, username: str, secret: str, timeout: float = 5.0,
                 ping_interval: float = 5.0, events: str = EVENT_CLASSES, reconnect_seconds: int = 1) -> None:
        """Configure; nothing connects until `start`."""
        self.host, self.port = host, port
        self._username, self._secret = username, secret
        self.timeout = timeout
        self.ping_interval = ping_interval
        self._event_mask = events
        self._reconnect_seconds = reconnect_seconds
        self.events: asyncio.Queue[AmiEvent | Reconnected] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self._manager: Manager | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._stopping = False
        self._logged_in = False
        self._connected_since: float | None = None
        self.generation = 0
        self._lost_at: float | None = None
        self.last_error = "not connected yet"
        self.last_pong: float | None = None
        self.events_received = 0
        self.events_dropped = 0

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect in the background; panoramisk retries every second until the PBX answers."""
        loop = asyncio.get_running_loop()
        self._stopping = False
        manager = Manager(
            host=self.host, port=self.port, username=self._username, secret=self._secret,
            events=self._event_mask, loop=loop, encoding="utf8",
            # panoramisk's pinger never checks the answer: ours (the watchdog) does, so park its timer.
            ping_delay=10**9, ping_interval=10**9, reconnect_timeout=self._reconnect_seconds,
            on_connect=self._on_connect, on_login=self._on_login, on_disconnect=self._on_disconnect,
            protocol_factory=lambda: _FastProtocol(self._queue_event),
        )
        manager.register_event("*", self._on_event)
        self._manager = manager
        manager.connect()
        self._watchdog = asyncio.create_task(self._watch(), name="ami-watchdog")

    async def stop(self) -> None:
        """Stop reconnecting and close the link; pending actions fail with AmiNotConnected."""
        self._stopping = True
        if self._watchdog:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._manager is not None:
            self._fail_pending("AMI client stopped")
            self._manager.close()
        self._logged_in = False

    @property
    def connected(self) -> bool:
        """Logged in on an open link."""
        manager = self._manager
        return bool(manager is not None and self._logged_in and manager._connected and manager.authenticated)

    @property
    def detail(self) -> str:
        """Where the link stands, for /status."""
        if self.connected:
            return f"{self.host}:{self.port} logged in as {self._username}"
        return f"{self.host}:{self.port}: {self.last_error}"

    # --- panoramisk callbacks (plain functions called by its loop; they must never raise) -----------------

    def _on_connect(self, manager: Manager) -> None:
        if self._stopping:
            manager.close()
            return
        self._connected_since = time.monotonic()
        self.last_error = "connected, logging in"

    def _on_login(self, manager: Manager) -> None:
        self._logged_in = True
        self.generation += 1
        self.last_error = ""
        self.last_pong = time.monotonic()
        log.info("AMI logged in to %s:%s (link #%d)", self.host, self.port, self.generation)
        marker = Reconnected(self.generation, time.time(), self._lost_at)
        try:
            self.events.put_nowait(marker)
        except asyncio.QueueFull:
            # The rebuild supersedes every queued event.
            self._drain_queue()
            self.events.put_nowait(marker)

    def _on_disconnect(self, manager: Manager, exc: Any) -> None:
        was_logged_in, self._logged_in = self._logged_in, False
        self._lost_at = time.time()
        if was_logged_in or not self.last_error.startswith("login"):
            self.last_error = "connection lost, reconnecting"
        log.warning("AMI connection to %s:%s lost; reconnecting", self.host, self.port)
        self._fail_pending("AMI connection lost")

    def _on_event(self, manager: Manager, message: Message) -> None:
        try:
            self._queue_event(to_event(message))
        except Exception:  # noqa: BLE001 - an exception here would kill panoramisk's connection
            log.exception("could not read an AMI event")

    def _queue_event(self, event: AmiEvent) -> None:
        try:
            self.events_received += 1
            self.events.put_nowait(event)
        except asyncio.QueueFull:
            # The consumer is hopelessly behind: drop the link, the rebuild after the reconnect repairs the state.
            self.events_dropped += 1
            if self.events_dropped == 1 or self.events_dropped % 1000 == 0:
                log.error("AMI event queue full (%d dropped); forcing a reconnect and rebuild", self.events_dropped)
            self._abort()
        except Exception:  # noqa: BLE001 - an exception here would kill panoramisk's connection
            log.exception("could not read an AMI event")

    # --- helpers ---------------------------------------------------------------------------------------

    def _drain_queue(self) -> None:
        while True:
            try:
                self.events.get_nowait()
            except asyncio.QueueEmpty:
                return

    def _fail_pending(self, reason: str) -> None:
        manager = self._manager
        if manager is None:
            return
        while manager.awaiting_actions:
            action = manager.awaiting_actions.popleft()
            if not action.future.done():
                action.future.set_exception(AmiNotConnected(reason))

    def _abort(self) -> None:
        manager = self._manager
        protocol = getattr(manager, "protocol", None)
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            transport.abort()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            manager = self._manager
            if manager is None or self._stopping:
                continue
            if manager._connected and not self._logged_in:
                since = self._connected_since or time.monotonic()
                if time.monotonic() - since > 2 * self.timeout:
                    self.last_error = "login refused or unanswered (check INTAKE_AMI_USERNAME/SECRET)"
                    log.warning("AMI login to %s:%s did not succeed; retrying", self.host, self.port)
                    self._abort()
                continue
            if not self.connected:
                continue
            try:
                await self.action("Ping")
                self.last_pong = time.monotonic()
            except AmiError as err:
                log.warning("AMI ping unanswered (%s); dropping the link to reconnect", err)
                self.last_error = "ping unanswered"
                self._abort()

    # --- actions ---------------------------------------------------------------------------------------

    async def action(self, name: str, fields: Mapping[str, str | Sequence[str]] | None = None, *,
                     wait_seconds: float | None = None, as_list: bool | None = None) -> AmiReply:
        """Send one action; raise AmiNotConnected / AmiTimeout / AmiActionFailed."""
        manager = self._manager
        if manager is None or not self.connected:
            raise AmiNotConnected(self.last_error or "not connected")
        payload: dict[str, Any] = {"Action": name}
        for key, value in (fields or {}).items():
            payload[key] = list(value) if isinstance(value, list | tuple) else value
        if name.lower() == "originate" and "Async" not in payload:
            payload["Async"] = "false"  # panoramisk 1.4 raises KeyError('async') without it
        if name.lower() == "queueadd" and as_list is None:
            as_list = False
        try:
            future = manager.send_action(payload, as_list=as_list)
        except Exception as err:  # noqa: BLE001 - a closed transport raises assorted errors
            raise AmiNotConnected(f"could not send {name}: {err}") from err
        try:
            result = await asyncio.wait_for(future, wait_seconds or self.timeout)
        except TimeoutError as err:
            # wait_for cancelled the future, so panoramisk will not re-send it after a reconnect.
            raise AmiTimeout(f"{name}: no answer in {wait_seconds or self.timeout:.1f} s") from err
        reply = _reply(result)
        if reply.response.lower() in ("error", "failure", "fail"):
            raise AmiActionFailed(f"{name}: {reply.message or reply.response}")
        return reply

    async def originate(self, *, channel: str, context: str, exten: str, caller_id: str,
                        variables: Mapping[str, str], channel_id: str, ring_timeout: float = 30) -> OriginateResult:
        """Place a call with `Async: true` and a fixed ChannelId (so its events are recognised and never doubled)."""
        fields: dict[str, str | Sequence[str]] = {
            "Channel": channel, "Context": context, "Exten": exten, "Priority": "1", "CallerID": caller_id,
            "Timeout": str(int(ring_timeout * 1000)), "Async": "true", "ChannelId": channel_id,
            "Variable": [f"{k}={v}" for k, v in variables.items()],
        }
        reply = await self.action("Originate", fields, wait_seconds=ring_timeout + self.timeout + 5)
        final = next((e for e in reply.events if e.name == "OriginateResponse"), None)
        if final is None:
            raise AmiActionFailed(f"Originate: {reply.message or 'no OriginateResponse'}")
        return OriginateResult(answered=final.get("Response") == "Success", reason=final.get("Reason"),
                               channel=final.get("Channel"), uniqueid=final.get("Uniqueid"))
