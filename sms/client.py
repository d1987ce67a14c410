"""SMS gateway port: messages, results, the errors every provider translates into, and the file provider."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# One UCS-2 SMS holds 70 characters; a concatenated part 67 (6 bytes go to the UDH). The 【signature】 counts.
SINGLE_PART_CHARS = 70
MULTI_PART_CHARS = 67
MAX_CHARS = 500  # what the Chinese platforms accept for one (long) message


@dataclass(frozen=True, slots=True)
class SmsMessage:
    """One SMS to send: number in E.164, full text (signature first), template data for template providers."""

    to: str
    text: str
    template: str
    params: dict[str, str]
    # Our reference towards the gateway (Kannel dlr-url, Aliyun OutId, Tencent SessionContext): never personal data.
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class SendResult:
    """What the gateway said: its message id, and one id per part where it numbers parts (SMPP)."""

    provider_message_id: str
    part_ids: tuple[str, ...] = ()
    parts: int = 1


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the gateway can tell about an earlier attempt whose answer was lost."""

    result: SendResult | None = None
    # True when the gateway is sure: `result` set = it was accepted, `result` None = it never arrived.
    known: bool = False


@dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery report: `delivered` True/False is final, None is an intermediate state (accepted by the SMSC)."""

    provider: str
    provider_message_id: str | None
    delivered: bool | None
    code: str
    reference: str | None = None  # our idempotency key, when the gateway echoes it
    at: dt.datetime | None = None
    aliases: tuple[str, ...] = ()  # other spellings of the id (SMSCs mix hex and decimal)


@dataclass(frozen=True, slots=True)
class Inbound:
    """An SMS a citizen sent to the centre's number."""

    provider: str
    external_id: str
    sender: str
    text: str
    received_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


class SmsError(Exception):
    """Sending failed; the subclass says whether the message may have left."""


class SmsNotSent(SmsError):
    """The gateway certainly did not take the message (unreachable, busy): safe to send again."""


class SmsThrottled(SmsNotSent):
    """The gateway refused for now because of a rate limit; try again after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        """Remember when a retry makes sense."""
        super().__init__(message)
        self.retry_after = retry_after


class SmsMisconfigured(SmsNotSent):
    """Credentials, signature or template are not accepted: every message fails until an operator fixes it."""


class SmsOutcomeUnknown(SmsError):
    """The request may have reached the gateway (timeout, connection lost): reconcile before sending again."""


class SmsRejected(SmsError):
    """The gateway refused this message for good (invalid number, blacklisted, content not allowed)."""


class SmsSink(Protocol):
    """Where a gateway with its own connection (SMPP) hands over receipts and incoming messages."""

    async def receipt(self, receipt: Receipt) -> None:
        """Record a delivery report."""
        ...

    async def inbound(self, message: Inbound) -> None:
        """Accept an incoming SMS durably."""
        ...


class SmsSender(Protocol):
    """What the notice pipeline needs from an SMS gateway."""

    name: str

    async def send(self, message: SmsMessage) -> SendResult:
        """Send one message, raising SmsNotSent / SmsOutcomeUnknown / SmsRejected on failure."""
        ...

    async def lookup(self, message: SmsMessage, *, since: dt.datetime) -> Lookup:
        """Ask the gateway whether an attempt since `since` with this key was accepted."""
        ...

    def start(self, sink: SmsSink, loop: asyncio.AbstractEventLoop) -> None:
        """Open long-lived connections (SMPP) that report to `sink` on `loop`; HTTP gateways do nothing."""
        ...

    async def close(self) -> None:
        """Close long-lived connections."""
        ...

    async def check(self) -> bool:
        """Tell whether the gateway is reachable."""
        ...


def segments(text: str) -> int:
    """Return how many billed SMS parts a text needs (UCS-2 rules; the signature is part of the text)."""
    length = len(text)
    if length <= SINGLE_PART_CHARS:
        return 1
    return math.ceil(length / MULTI_PART_CHARS)


def strip_astral(text: str) -> str:
    """Drop characters outside the BMP (emoji): UCS-2 cannot carry them and byte splits would break them."""
    return "".join(ch for ch in text if ord(ch) <= 0xFFFF)


def id_aliases(message_id: str) -> tuple[str, ...]:
    """Other spellings of a gateway message id: many SMSCs answer hex on submit and decimal in receipts."""
    aliases: list[str] = []
    if message_id.isdigit():
        aliases += [format(int(message_id), "x"), format(int(message_id), "X")]
    with contextlib.suppress(ValueError):
        aliases.append(str(int(message_id, 16)))
    return tuple(a for a in dict.fromkeys(aliases) if a != message_id)


def national_digits(e164: str) -> str:
    """Return a number without "+" (8613812345678), the form most SMS gateways expect."""
    return e164.removeprefix("+")


class FileSmsSender:
    """The embedded default: every message is appended as a JSON line to a local log instead of being sent."""

    name = "file"

    def __init__(self, path: Path) -> None:
        """Write to `path` (created on first use)."""
        self.path = path
        self._lock = asyncio.Lock()

    async def send(self, message: SmsMessage) -> SendResult:
        """Append the message unless a line with the same idempotency key is already there."""
        async with self._lock:
            try:
                return await asyncio.to_thread(self._append, message)
            except OSError as err:
                raise SmsNotSent(f"cannot write {self.path.name}: {err.strerror}") from err

    async def lookup(self, message: SmsMessage, *, since: dt.datetime) -> Lookup:
        """The log is the gateway: a line with the key means it was sent."""
        async with self._lock:
            found = await asyncio.to_thread(self._find, message.idempotency_key)
        if found:
            return Lookup(SendResult(provider_message_id=message.idempotency_key), known=True)
        return Lookup(known=True)

    def _find(self, key: str) -> bool:
        if not self.path.exists():
            return False
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    if json.loads(line).get("idempotency_key") == key:
                        return True
                except ValueError:
                    continue
        return False

    def _append(self, message: SmsMessage) -> SendResult:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._find(message.idempotency_key):
            return SendResult(provider_message_id=message.idempotency_key, parts=segments(message.text))
        record = {
            "at": dt.datetime.now(dt.UTC).isoformat(),
            "to": message.to,
            "text": message.text,
            "template": message.template,
            "idempotency_key": message.idempotency_key,
        }
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        return SendResult(provider_message_id=message.idempotency_key, parts=segments(message.text))

    def start(self, sink: SmsSink, loop: asyncio.AbstractEventLoop) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def check(self) -> bool:
        """The log is writable."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return True

