"""SMPP 3.4 via smpplib: UCS-2 with UDH concatenation, delivery receipts, enquire_link and reconnects.

smpplib is blocking, so one thread owns the connection; the event loop hands it submits through a queue and
gets answers through futures. Receipts and replies are handed to the sink before the SMSC gets its
deliver_sm_resp, so the SMSC redelivers anything we failed to record.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import hashlib
import logging
import queue
import re
import select
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.gsm
import smpplib.smpp

from sms.client import (
    Inbound,
    Lookup,
    Receipt,
    SendResult,
    SmsMessage,
    SmsNotSent,
    SmsOutcomeUnknown,
    SmsRejected,
    SmsSink,
    SmsThrottled,
    id_aliases,
    national_digits,
    strip_astral,
)

log = logging.getLogger(__name__)

UCS2 = smpplib.consts.SMPP_ENCODING_ISO10646
ESM_RECEIPT = 0x04  # esm_class message type: SMSC delivery receipt
ESM_UDHI = int(smpplib.consts.SMPP_GSMFEAT_UDHI)
ESME_ROK = int(smpplib.consts.SMPP_ESME_ROK)
# Temporary application error: the SMSC keeps the deliver_sm and tries again later.
ESME_RX_T_APPN = int(smpplib.consts.SMPP_ESME_RX_T_APPN)
REJECTED_STATUSES = frozenset({
    smpplib.consts.SMPP_ESME_RINVDSTADR, smpplib.consts.SMPP_ESME_RINVDSTTON, smpplib.consts.SMPP_ESME_RINVDSTNPI,
    smpplib.consts.SMPP_ESME_RINVMSGLEN, smpplib.consts.SMPP_ESME_RINVESMCLASS, 0x104,  # 0x104: dest blacklisted
})
THROTTLED_STATUSES = frozenset({smpplib.consts.SMPP_ESME_RTHROTTLED, smpplib.consts.SMPP_ESME_RMSGQFUL})
# message_state values of SMPP 3.4 §5.2.28 and the stat: words of receipt texts.
FINAL_STATES = {2: (True, "DELIVRD"), 3: (False, "EXPIRED"), 4: (False, "DELETED"), 5: (False, "UNDELIV"),
                8: (False, "REJECTD")}
STAT_WORDS = {"DELIVRD": True, "EXPIRED": False, "DELETED": False, "UNDELIV": False, "REJECTD": False,
              "ACCEPTD": None, "ENROUTE": None, "UNKNOWN": None}
_RECEIPT_ID = re.compile(rb"id:(\S+)", re.I)
_RECEIPT_STAT = re.compile(rb"stat:(\w+)", re.I)
_RECEIPT_ERR = re.compile(rb"err:(\w+)", re.I)
REASSEMBLY_SECONDS = 600.0


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("ascii", errors="replace") if isinstance(value, bytes) else str(value)


def decode_payload(payload: bytes, data_coding: int) -> str:
    """Decode a short_message by its data_coding (UCS-2, GBK as Chinese SMSCs use, Latin-1, ASCII)."""
    coding = data_coding & 0x0F if data_coding & 0xF0 in (0x00, 0xF0) else data_coding
    if coding == 0x08:
        return payload.decode("utf-16-be", errors="replace")
    if coding == 0x0F:
        return payload.decode("gbk", errors="replace")
    if coding == 0x03:
        return payload.decode("latin-1")
    return payload.decode("ascii", errors="replace")


def parse_receipt(pdu: Any) -> Receipt | None:
    """Read a delivery receipt from a deliver_sm (TLVs first, then the "id:… stat:…" text)."""
    body: bytes = pdu.short_message or getattr(pdu, "message_payload", None) or b""
    message_id = _text(getattr(pdu, "receipted_message_id", None))
    if not message_id:
        match = _RECEIPT_ID.search(body)
        message_id = match.group(1).decode("ascii", errors="replace") if match else ""
    if not message_id:
        return None
    delivered: bool | None = None
    code = "UNKNOWN"
    state = getattr(pdu, "message_state", None)
    if isinstance(state, int) and state in FINAL_STATES:
        delivered, code = FINAL_STATES[state]
    stat = _RECEIPT_STAT.search(body)
    if stat:
        word = stat.group(1).decode("ascii", errors="replace").upper()
        code = word
        delivered = STAT_WORDS.get(word, delivered)
    err = _RECEIPT_ERR.search(body)
    if err and delivered is False:
        code = f"{code}:{err.group(1).decode('ascii', errors='replace')}"[:32]
    return Receipt(provider="smpp", provider_message_id=message_id, delivered=delivered, code=code,
                   aliases=id_aliases(message_id))


def split_udh(payload: bytes) -> tuple[tuple[int, int, int] | None, bytes]:
    """Split a UDH off a payload; return ((ref, total, seq) of a concatenation IE, or None, body)."""
    if not payload:
        return None, payload
    length = payload[0]
    header, body = payload[1:1 + length], payload[1 + length:]
    pos = 0
    while pos + 2 <= len(header):
        iei, iel = header[pos], header[pos + 1]
        data = header[pos + 2:pos + 2 + iel]
        if iei == 0x00 and iel == 3:
            return (data[0], data[1], data[2]), body
        if iei == 0x08 and iel == 4:
            return ((data[0] << 8) | data[1], data[2], data[3]), body
        pos += 2 + iel
    return None, body


@dataclass
class _Submit:
    """One message in flight: its parts, their answers, and the caller's future."""

    destination: str
    parts: list[bytes]
    esm_class: int
    future: concurrent.futures.Future[SendResult]
    ids: dict[int, str] = field(default_factory=dict)
    errors: dict[int, int] = field(default_factory=dict)
    written: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass
class _Partial:
    """Parts of a concatenated reply seen so far."""

    sender: str
    data_coding: int
    total: int
    parts: dict[int, bytes] = field(default_factory=dict)
    first_seen: float = field(default_factory=time.monotonic)


class SmppSender:
    """One transceiver bind per process, kept alive with enquire_link and re-established with backoff."""

    name = "smpp"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        system_id: str,
        password: str,
        system_type: str = "",
        source_addr: str | None = None,
        timeout: float = 10.0,
        enquire_link_seconds: float = 30.0,
        reconnect_max_seconds: float = 30.0,
    ) -> None:
        """Configure the bind; nothing connects before start()."""
        self._host, self._port = host, port
        self._system_id, self._password, self._system_type = system_id, password, system_type
        self._source = source_addr or ""
        self._timeout = timeout
        self._enquire_every = enquire_link_seconds
        self._reconnect_max = reconnect_max_seconds
        self._queue: queue.Queue[_Submit] = queue.Queue()
        self._pending: dict[int, tuple[_Submit, int]] = {}
        self._inflight: list[_Submit] = []
        self._partials: dict[tuple[str, int, int], _Partial] = {}
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread: threading.Thread | None = None
        self._sink: SmsSink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.binds = 0  # how many times a bind succeeded (reconnects are visible in tests and /status)

    def start(self, sink: SmsSink, loop: asyncio.AbstractEventLoop) -> None:
        """Start the connection thread; receipts and replies are handed to `sink` on `loop`."""
        self._sink = sink
        self._loop = loop
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="smpp", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Unbind and stop the thread."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, self._timeout + 5)
            self._thread = None

    def wait_bound(self, seconds: float) -> bool:
        """Block until the bind is up (for the CLI and tests)."""
        return self._bound.wait(seconds)

    async def send(self, message: SmsMessage) -> SendResult:
        """Split into UCS-2 parts (67 characters with UDH) and submit each with a delivery receipt request."""
        if not self._bound.is_set():
            raise SmsNotSent("SMSC not bound")
        try:
            parts, _coding, esm_class = smpplib.gsm.make_parts(strip_astral(message.text), encoding=UCS2)
        except smpplib.exceptions.MessageTooLong as err:
            raise SmsRejected("text too long for SMPP concatenation") from err
        future: concurrent.futures.Future[SendResult] = concurrent.futures.Future()
        self._queue.put(_Submit(national_digits(message.to), list(parts), int(esm_class), future))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=self._timeout + 1)
        except TimeoutError as err:
            # If the thread had not started writing, the cancel stops it; otherwise the parts may be out.
            raise SmsOutcomeUnknown("no submit_sm_resp in time") from err

    async def lookup(self, message: SmsMessage, *, since: dt.datetime) -> Lookup:
        """SMPP cannot look up by our key (query_sm needs the SMSC's id, which is what was lost)."""
        return Lookup()

    async def check(self) -> bool:
        """The bind is up."""
        return self._bound.is_set()

    # --- connection thread ---

    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            client: smpplib.client.Client | None = None
            try:
                client = self._connect()
                delay = 1.0
                self._serve(client)
            except Exception as err:  # noqa: BLE001 - the connection thread must outlive any SMSC failure
                log.warning("smpp connection to %s:%s lost: %s: %s", self._host, self._port, type(err).__name__, err)
            finally:
                self._bound.clear()
                self._fail_inflight()
                if client is not None:
                    self._disconnect(client)
            self._stop.wait(delay)
            delay = min(delay * 2, self._reconnect_max)

    def _connect(self) -> smpplib.client.Client:
        client = smpplib.client.Client(self._host, self._port, timeout=self._timeout, allow_unknown_opt_params=True)
        client.connect()
        client.bind_transceiver(system_id=self._system_id, password=self._password, system_type=self._system_type)
        self.binds += 1
        self._bound.set()
        log.info("smpp bound to %s:%s as %s", self._host, self._port, self._system_id)
        return client

    def _disconnect(self, client: smpplib.client.Client) -> None:
        with contextlib.suppress(Exception):
            if client.state == smpplib.consts.SMPP_CLIENT_STATE_BOUND_TRX:
                client.send_pdu(smpplib.smpp.make_pdu("unbind", client=client))
                end = time.monotonic() + 1.0
                # Wait briefly for unbind_resp so the SMSC sees a clean close (PDUs in between are dropped).
                while time.monotonic() < end and client.state != smpplib.consts.SMPP_CLIENT_STATE_OPEN:
                    readable, _, _ = select.select([client._socket], [], [], 0.1)  # noqa: SLF001
                    if readable:
                        client.read_pdu()
        with contextlib.suppress(Exception):
            client.state = smpplib.consts.SMPP_CLIENT_STATE_OPEN
            client.disconnect()

    def _serve(self, client: smpplib.client.Client) -> None:
        sock = client._socket  # noqa: SLF001 - smpplib exposes no other way to poll with a timeout
        last_activity = time.monotonic()
        enquire_sent: float | None = None
        while not self._stop.is_set():
            if self._write_submits(client):
                last_activity = time.monotonic()
            readable, _, _ = select.select([sock], [], [], 0.05)
            now = time.monotonic()
            if readable:
                pdu = client.read_pdu()
                last_activity = now
                if pdu.command == "enquire_link_resp":
                    enquire_sent = None
                self._dispatch(client, pdu)
            if enquire_sent is None and now - last_activity >= self._enquire_every:
                client.send_pdu(smpplib.smpp.make_pdu("enquire_link", client=client))
                enquire_sent = now
            elif enquire_sent is not None and now - enquire_sent > self._timeout:
                raise smpplib.exceptions.ConnectionError("enquire_link unanswered")
            self._expire(now)

    def _write_submits(self, client: smpplib.client.Client) -> bool:
        wrote = False
        while True:
            try:
                submit = self._queue.get_nowait()
            except queue.Empty:
                return wrote
            # A caller that gave up before we started must not have its message sent behind its back.
            if not submit.future.set_running_or_notify_cancel():
                continue
            self._inflight.append(submit)
            for index, part in enumerate(submit.parts):
                pdu = client.send_message(
                    source_addr_ton=0 if self._source.isdigit() else 5,
                    source_addr_npi=1 if self._source.isdigit() else 0,
                    source_addr=self._source,
                    dest_addr_ton=1,
                    dest_addr_npi=1,
                    destination_addr=submit.destination,
                    short_message=part,
                    data_coding=UCS2,
                    esm_class=submit.esm_class,
                    registered_delivery=1,
                )
                submit.written += 1
                self._pending[pdu.sequence] = (submit, index)
                wrote = True

    def _dispatch(self, client: smpplib.client.Client, pdu: Any) -> None:
        command = pdu.command
        if command == "submit_sm_resp":
            self._answered(pdu.sequence, int(pdu.status), _text(getattr(pdu, "message_id", None)))
        elif command == "generic_nack":
            self._answered(pdu.sequence, int(pdu.status) or smpplib.consts.SMPP_ESME_RSYSERR, "")
        elif command == "deliver_sm":
            status = self._delivered(pdu)
            resp = smpplib.smpp.make_pdu("deliver_sm_resp", client=client, status=status)
            resp.sequence = pdu.sequence
            client.send_pdu(resp)
        elif command == "enquire_link":
            resp = smpplib.smpp.make_pdu("enquire_link_resp", client=client)
            resp.sequence = pdu.sequence
            client.send_pdu(resp)
        elif command == "unbind":
            with contextlib.suppress(Exception):
                resp = smpplib.smpp.make_pdu("unbind_resp", client=client)
                resp.sequence = pdu.sequence
                client.send_pdu(resp)
            raise smpplib.exceptions.ConnectionError("SMSC unbound")
        elif command != "enquire_link_resp":
            log.info("smpp: ignoring %s", command)

    def _answered(self, sequence: int, status: int, message_id: str) -> None:
        entry = self._pending.pop(sequence, None)
        if entry is None:
            return
        submit, index = entry
        if status == smpplib.consts.SMPP_ESME_ROK and message_id:
            submit.ids[index] = message_id
        else:
            submit.errors[index] = status or smpplib.consts.SMPP_ESME_RSYSERR
        if len(submit.ids) + len(submit.errors) == len(submit.parts):
            self._finish(submit)

    def _finish(self, submit: _Submit) -> None:
        if submit in self._inflight:
            self._inflight.remove(submit)
        if not submit.errors:
            ids = tuple(submit.ids[i] for i in range(len(submit.parts)))
            self._resolve(submit, result=SendResult(provider_message_id=ids[0], part_ids=ids, parts=len(ids)))
            return
        status = next(iter(submit.errors.values()))
        text = f"SMSC status 0x{status:02X} {smpplib.consts.DESCRIPTIONS.get(status, '')}".strip()
        error: Exception
        if submit.ids:
            error = SmsOutcomeUnknown(f"only {len(submit.ids)} of {len(submit.parts)} parts accepted: {text}")
        elif status in REJECTED_STATUSES:
            error = SmsRejected(text)
        elif status in THROTTLED_STATUSES:
            error = SmsThrottled(text, retry_after=60.0)
        else:
            error = SmsOutcomeUnknown(text)
        self._resolve(submit, error=error)

    @staticmethod
    def _resolve(submit: _Submit, *, result: SendResult | None = None, error: Exception | None = None) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            if error is not None:
                submit.future.set_exception(error)
            else:
                assert result is not None
                submit.future.set_result(result)

    def _expire(self, now: float) -> None:
        for submit in list(self._inflight):
            if now - submit.started > self._timeout:
                self._inflight.remove(submit)
                for seq in [s for s, (sub, _) in self._pending.items() if sub is submit]:
                    del self._pending[seq]
                self._resolve(submit, error=SmsOutcomeUnknown("no submit_sm_resp in time"))
        for key, partial in list(self._partials.items()):
            if now - partial.first_seen > REASSEMBLY_SECONDS:
                # A part never came: hand over what arrived rather than lose the citizen's words.
                del self._partials[key]
                payload = b"".join(partial.parts[i] for i in sorted(partial.parts))
                self._hand_over_inbound(partial.sender, decode_payload(payload, partial.data_coding) + "…")

    def _fail_inflight(self) -> None:
        for submit in self._inflight:
            error: Exception = (SmsOutcomeUnknown("connection lost before every part was answered")
                                if submit.written else SmsNotSent("connection lost before sending"))
            self._resolve(submit, error=error)
        self._inflight.clear()
        self._pending.clear()

    def _call_sink(self, coro: Any) -> bool:
        if self._loop is None:
            coro.close()
            return False
        try:
            asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=self._timeout)
        except Exception as err:  # noqa: BLE001 - the SMSC redelivers when we answer with an error
            log.warning("smpp: could not record a deliver_sm: %s: %s", type(err).__name__, err)
            return False
        return True

    def _delivered(self, pdu: Any) -> int:
        """Handle a deliver_sm; return the deliver_sm_resp status."""
        assert self._sink is not None
        esm_class = int(pdu.esm_class or 0)
        if esm_class & ESM_RECEIPT:
            receipt = parse_receipt(pdu)
            if receipt is None:
                return ESME_ROK
            ok = self._call_sink(self._sink.receipt(receipt))
            return ESME_ROK if ok else ESME_RX_T_APPN
        sender = _text(pdu.source_addr)
        payload: bytes = pdu.short_message or getattr(pdu, "message_payload", None) or b""
        data_coding = int(pdu.data_coding or 0)
        concat: tuple[int, int, int] | None = None
        if esm_class & ESM_UDHI:
            concat, payload = split_udh(payload)
        elif getattr(pdu, "sar_msg_ref_num", None) is not None:
            concat = (int(pdu.sar_msg_ref_num), int(pdu.sar_total_segments), int(pdu.sar_segment_seqnum))
        if concat is not None and concat[1] > 1:
            ref, total, seq = concat
            partial = self._partials.setdefault((sender, ref, total), _Partial(sender, data_coding, total))
            partial.parts[seq] = payload
            if len(partial.parts) < total:
                return ESME_ROK
            del self._partials[(sender, ref, total)]
            payload = b"".join(partial.parts[i] for i in sorted(partial.parts))
        ok = self._hand_over_inbound(sender, decode_payload(payload, data_coding))
        return ESME_ROK if ok else ESME_RX_T_APPN

    def _hand_over_inbound(self, sender: str, text: str) -> bool:
        assert self._sink is not None
        # No id travels with a deliver_sm; a redelivery within the same 5 minutes is recognised as such.
        bucket = int(time.time() // 300)
        digest = hashlib.sha256(f"{sender}|{text}|{bucket}".encode()).hexdigest()[:32]
        return self._call_sink(self._sink.inbound(Inbound(provider="smpp", external_id=digest, sender=sender,
                                                          text=text)))
