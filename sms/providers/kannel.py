"""Kannel (bearerbox + smsbox): sendsms over HTTP POST, delivery reports through dlr-url, replies via post-url."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from urllib.parse import quote

import httpx

from sms.client import (
    Inbound,
    Lookup,
    Receipt,
    SendResult,
    SmsMessage,
    SmsMisconfigured,
    SmsNotSent,
    SmsOutcomeUnknown,
    SmsRejected,
    SmsSink,
    national_digits,
    segments,
)

log = logging.getLogger(__name__)

# dlr-mask bits: 1 delivered to the phone, 2 not delivered, 8 accepted by the SMSC, 16 rejected by the SMSC.
# 4 (buffered) only says "still trying" and would cost a callback per message for nothing.
DLR_MASK = 1 | 2 | 8 | 16
DLR_OUTCOMES: dict[int, tuple[bool | None, str]] = {
    1: (True, "DELIVRD"),
    2: (False, "UNDELIV"),
    4: (None, "BUFFERED"),
    8: (None, "ACCEPTD"),
    16: (False, "REJECTD"),
}


class KannelSender:
    """Sends through a Kannel smsbox; the dlr-url carries our key back, so receipts need no id mapping."""

    name = "kannel"

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        url: str,
        username: str,
        password: str,
        dlr_url: str,
        sender: str | None = None,
        smsc: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Configure the sendsms user; `dlr_url` is our callback (with its secret path), without query."""
        self._http = http
        self._url = url
        self._username = username
        self._password = password
        self._dlr_url = dlr_url
        self._sender = sender
        self._smsc = smsc
        self._timeout = timeout
        self.smsc_offline = False  # Kannel said "queued for later delivery": the SMSC link is down

    async def send(self, message: SmsMessage) -> SendResult:
        """POST the text with X-Kannel headers, so numbers and text stay out of URLs and access logs."""
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-Kannel-Username": self._username,
            "X-Kannel-Password": self._password,
            "X-Kannel-To": national_digits(message.to),
            "X-Kannel-Coding": "2",  # UCS-2: Kannel converts our UTF-8 and splits with UDH when long
            "X-Kannel-DLR-Mask": str(DLR_MASK),
            "X-Kannel-DLR-Url": f"{self._dlr_url}?ref={quote(message.idempotency_key, safe='')}"
                                "&type=%d&ts=%T&fid=%F",
        }
        if self._sender:
            headers["X-Kannel-From"] = self._sender
        if self._smsc:
            headers["X-Kannel-SMSC"] = self._smsc
        try:
            response = await self._http.post(self._url, content=message.text.encode("utf-8"), headers=headers,
                                             timeout=self._timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as err:
            raise SmsNotSent(f"kannel unreachable: {type(err).__name__}") from err
        except httpx.HTTPError as err:
            # The request may have been read by smsbox before the answer was lost.
            raise SmsOutcomeUnknown(f"kannel answer lost: {type(err).__name__}") from err
        body = response.text.strip()
        if response.status_code == 202 and body[:2] in ("0:", "3:"):
            self.smsc_offline = body.startswith("3:")
            return SendResult(provider_message_id=message.idempotency_key, parts=segments(message.text))
        if response.status_code == 403:
            raise SmsMisconfigured(f"kannel: {body[:120]}")
        if response.status_code == 400:
            if "Sender missing" in body or "Authorization" in body:
                raise SmsMisconfigured(f"kannel: {body[:120]}")
            raise SmsRejected(f"kannel: {body[:120]}")
        if response.status_code == 503:
            raise SmsNotSent(f"kannel busy: {body[:120]}")
        raise SmsOutcomeUnknown(f"kannel HTTP {response.status_code}: {body[:120]}")

    async def lookup(self, message: SmsMessage, *, since: dt.datetime) -> Lookup:
        """Kannel cannot be asked; its receipts (dlr-url with our key) settle an unknown outcome instead."""
        return Lookup()

    def start(self, sink: SmsSink, loop: asyncio.AbstractEventLoop) -> None:
        """Kannel calls us over HTTP; nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def check(self) -> bool:
        """smsbox answers HTTP (any answer: the request carries no credentials)."""
        try:
            await self._http.get(self._url, timeout=min(self._timeout, 3.0))
        except httpx.HTTPError:
            return False
        return True


def receipt_from_dlr(*, ref: str, dlr_type: int, timestamp: int | None, foreign_id: str | None) -> Receipt | None:
    """Turn a dlr-url call into a receipt (None for types we did not ask for)."""
    outcome = DLR_OUTCOMES.get(dlr_type)
    if outcome is None:
        return None
    delivered, code = outcome
    at = dt.datetime.fromtimestamp(timestamp, dt.UTC) if timestamp else None
    return Receipt(provider="kannel", provider_message_id=ref, reference=ref, delivered=delivered, code=code,
                   at=at, aliases=(foreign_id,) if foreign_id else ())


def inbound_from_post(*, message_id: str, sender: str, body: bytes, charset: str | None,
                      timestamp: int | None) -> Inbound:
    """Turn a post-url call (X-Kannel-From header, text body) into an incoming message."""
    encoding = (charset or "utf-8").strip('"').lower()
    if encoding in ("ucs-2", "ucs2", "utf-16be", "utf-16-be"):
        encoding = "utf-16-be"
    try:
        text = body.decode(encoding)
    except (LookupError, UnicodeDecodeError):
        text = body.decode("utf-8", errors="replace")
    at = dt.datetime.fromtimestamp(timestamp, dt.UTC) if timestamp else dt.datetime.now(dt.UTC)
    return Inbound(provider="kannel", external_id=message_id, sender=sender, text=text, received_at=at)
