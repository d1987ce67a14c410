"""A protocol-faithful local SMSC speaking SMPP 3.4 over TCP, written from the specification with `struct`
(independently of smpplib, so encoding bugs on our side show up): binds with credentials, submit_sm with
UDH concatenation checked, delivery receipts (text and TLVs), deliver_sm for citizens' replies with
redelivery on error answers, enquire_link both ways, unbind, generic_nack, and fault injection.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.workflow_platform import free_port

GENERIC_NACK = 0x80000000
BIND_RECEIVER, BIND_TRANSMITTER, BIND_TRANSCEIVER = 0x00000001, 0x00000002, 0x00000009
SUBMIT_SM, DELIVER_SM, UNBIND, ENQUIRE_LINK = 0x00000004, 0x00000005, 0x00000006, 0x00000015
RESP = 0x80000000
ESME_ROK, ESME_RINVCMDID, ESME_RINVBNDSTS, ESME_RSYSERR = 0x00, 0x03, 0x04, 0x08
ESME_RINVDSTADR, ESME_RBINDFAIL, ESME_RINVPASWD, ESME_RTHROTTLED = 0x0B, 0x0D, 0x0E, 0x58
TLV_RECEIPTED_MESSAGE_ID, TLV_MESSAGE_STATE = 0x001E, 0x0427


def _cstring(data: bytes, pos: int, limit: int) -> tuple[bytes, int]:
    end = data.index(b"\x00", pos)
    if end - pos >= limit:
        raise ValueError("C-octet string too long")
    return data[pos:end], end + 1


def _tlvs(data: bytes, pos: int) -> dict[int, bytes]:
    result: dict[int, bytes] = {}
    while pos + 4 <= len(data):
        tag, length = struct.unpack(">HH", data[pos:pos + 4])
        result[tag] = data[pos + 4:pos + 4 + length]
        pos += 4 + length
    return result


@dataclass
class SubmittedPart:
    """One submit_sm as received."""

    source: str
    source_ton: int
    destination: str
    dest_ton: int
    dest_npi: int
    esm_class: int
    data_coding: int
    registered_delivery: int
    short_message: bytes
    message_id: str
    system_id: str

    @property
    def udh(self) -> bytes:
        """The user data header, when esm_class has UDHI set."""
        if not self.esm_class & 0x40:
            return b""
        return self.short_message[: 1 + self.short_message[0]]

    @property
    def payload(self) -> bytes:
        """The text octets without the UDH."""
        return self.short_message[len(self.udh):]


@dataclass
class SmscState:
    """Everything the SMSC has seen, plus fault switches (read them under `lock`)."""

    system_id: str
    password: str
    parts: list[SubmittedPart] = field(default_factory=list)
    binds: int = 0
    bind_failures: int = 0
    enquire_links: int = 0
    deliver_resps: list[tuple[str, int]] = field(default_factory=list)  # (what, status)
    refuse_binds: bool = False
    silent_submits: bool = False
    reject_destinations: set[str] = field(default_factory=set)
    throttle_next: int = 0
    receipt_delay: float = 0.05
    receipt_id_style: str = "same"  # "same" or "decimal" (the hex/decimal quirk of many SMSCs)
    receipt_with_tlv: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def messages(self) -> list[tuple[str, str, list[SubmittedPart]]]:
        """Submitted messages with concatenated parts joined: (destination, text, parts)."""
        with self.lock:
            parts = list(self.parts)
        result: list[tuple[str, str, list[SubmittedPart]]] = []
        groups: dict[tuple[str, int, int], dict[int, SubmittedPart]] = {}
        for part in parts:
            udh = part.udh
            if not udh:
                result.append((part.destination, part.payload.decode("utf-16-be") if part.data_coding == 8
                               else part.payload.decode("latin-1"), [part]))
                continue
            assert udh[:3] == b"\x05\x00\x03", udh  # UDHL 5, IE 00 (8-bit reference), length 3
            ref, total, seq = udh[3], udh[4], udh[5]
            group = groups.setdefault((part.destination, ref, total), {})
            group[seq] = part
            if len(group) == total:
                ordered = [group[i] for i in range(1, total + 1)]
                text = b"".join(p.payload for p in ordered).decode("utf-16-be")
                result.append((part.destination, text, ordered))
                del groups[(part.destination, ref, total)]
        return result


class _Session:
    """One ESME connection."""

    def __init__(self, smsc: FakeSmsc, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.smsc = smsc
        self.reader = reader
        self.writer = writer
        self.bound: int | None = None
        self.system_id = ""
        self.sequence = 0
        self.waiting: dict[int, asyncio.Future[int]] = {}

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence

    async def write(self, command: int, status: int, sequence: int, body: bytes = b"") -> None:
        self.writer.write(struct.pack(">IIII", 16 + len(body), command, status, sequence) + body)
        await self.writer.drain()

    async def run(self) -> None:
        try:
            while True:
                header = await self.reader.readexactly(16)
                length, command, status, sequence = struct.unpack(">IIII", header)
                if length < 16 or length > 65536:
                    await self.write(GENERIC_NACK, 0x02, sequence)  # ESME_RINVCMDLEN
                    return
                body = await self.reader.readexactly(length - 16)
                await self.handle(command, status, sequence, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self.smsc.sessions.discard(self)
            with contextlib.suppress(Exception):
                self.writer.close()

    async def handle(self, command: int, status: int, sequence: int, body: bytes) -> None:
        st = self.smsc.state
        if command & RESP:
            future = self.waiting.pop(sequence, None)
            if future is not None and not future.done():
                future.set_result(status)
            return
        if command in (BIND_RECEIVER, BIND_TRANSMITTER, BIND_TRANSCEIVER):
            system_id, pos = _cstring(body, 0, 16)
            password, pos = _cstring(body, pos, 9)
            _system_type, pos = _cstring(body, pos, 13)
            interface_version = body[pos]
            with st.lock:
                refuse = st.refuse_binds
                if refuse or system_id.decode() != st.system_id or interface_version not in (0x33, 0x34):
                    st.bind_failures += 1
                    code = ESME_RBINDFAIL
                elif password.decode() != st.password:
                    st.bind_failures += 1
                    code = ESME_RINVPASWD
                else:
                    code = ESME_ROK
                    st.binds += 1
            if code == ESME_ROK:
                self.bound, self.system_id = command, system_id.decode()
            await self.write(command | RESP, code, sequence, b"fakesmsc\x00")
            return
        if command == ENQUIRE_LINK:
            with st.lock:
                st.enquire_links += 1
            await self.write(ENQUIRE_LINK | RESP, ESME_ROK, sequence)
            return
        if command == UNBIND:
            await self.write(UNBIND | RESP, ESME_ROK, sequence)
            self.bound = None
            self.writer.close()
            return
        if command == SUBMIT_SM:
            await self.submit(sequence, body)
            return
        await self.write(GENERIC_NACK, ESME_RINVCMDID, sequence)

    async def submit(self, sequence: int, body: bytes) -> None:
        st = self.smsc.state
        if self.bound not in (BIND_TRANSMITTER, BIND_TRANSCEIVER):
            await self.write(SUBMIT_SM | RESP, ESME_RINVBNDSTS, sequence, b"\x00")
            return
        _service, pos = _cstring(body, 0, 6)
        source_ton, _source_npi = body[pos], body[pos + 1]
        source, pos = _cstring(body, pos + 2, 21)
        dest_ton, dest_npi = body[pos], body[pos + 1]
        destination, pos = _cstring(body, pos + 2, 21)
        esm_class, _protocol_id, _priority = body[pos], body[pos + 1], body[pos + 2]
        _schedule, pos = _cstring(body, pos + 3, 17)
        _validity, pos = _cstring(body, pos, 17)
        registered, _replace, data_coding, _default_id, sm_length = body[pos:pos + 5]
        short_message = body[pos + 5:pos + 5 + sm_length]
        if len(short_message) != sm_length or sm_length > 140:
            await self.write(SUBMIT_SM | RESP, 0x01, sequence, b"\x00")  # ESME_RINVMSGLEN
            return
        with st.lock:
            silent = st.silent_submits
            throttled = st.throttle_next > 0
            if throttled:
                st.throttle_next -= 1
            rejected = destination.decode() in st.reject_destinations
        if silent:
            return  # the answer never comes: the ESME must treat the outcome as unknown
        if throttled:
            await self.write(SUBMIT_SM | RESP, ESME_RTHROTTLED, sequence, b"\x00")
            return
        if rejected or not destination.isdigit():
            await self.write(SUBMIT_SM | RESP, ESME_RINVDSTADR, sequence, b"\x00")
            return
        message_id = self.smsc.new_message_id()
        part = SubmittedPart(source=source.decode(), source_ton=source_ton, destination=destination.decode(),
                             dest_ton=dest_ton, dest_npi=dest_npi, esm_class=esm_class, data_coding=data_coding,
                             registered_delivery=registered, short_message=short_message, message_id=message_id,
                             system_id=self.system_id)
        with st.lock:
            st.parts.append(part)
        await self.write(SUBMIT_SM | RESP, ESME_ROK, sequence, message_id.encode() + b"\x00")
        if registered & 0x01:
            asyncio.get_running_loop().call_later(st.receipt_delay, lambda: asyncio.ensure_future(
                self.smsc.deliver_receipt(part)))

    async def deliver(self, *, source: str, destination: str, esm_class: int, data_coding: int, short_message: bytes,
                      tlvs: bytes = b"", attempts: int = 3, what: str = "") -> int:
        """Send a deliver_sm and wait for the answer; retry (like an SMSC) while the ESME answers an error."""
        status = ESME_RSYSERR
        for _ in range(attempts):
            body = (b"\x00" + bytes([1, 1]) + source.encode() + b"\x00" + bytes([0, 1]) + destination.encode()
                    + b"\x00" + bytes([esm_class, 0, 0]) + b"\x00\x00" + bytes([0, 0, data_coding, 0,
                                                                                  len(short_message)])
                    + short_message + tlvs)
            sequence = self.next_sequence()
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self.waiting[sequence] = future
            await self.write(DELIVER_SM, ESME_ROK, sequence, body)
            try:
                status = await asyncio.wait_for(future, timeout=15)
            except TimeoutError:
                status = ESME_RSYSERR
            with self.smsc.state.lock:
                self.smsc.state.deliver_resps.append((what, status))
            if status == ESME_ROK:
                return status
            await asyncio.sleep(0.3)
        return status


class FakeSmsc:
    """The SMSC, served from its own event loop in a background thread."""

    def __init__(self, *, system_id: str = "intake", password: str = "smpp-pw") -> None:
        """Prepare; call start()."""
        self.state = SmscState(system_id=system_id, password=password)
        self.port = free_port()
        self.sessions: set[_Session] = set()
        self._counter = 0x2A000000
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def new_message_id(self) -> str:
        """A fresh SMSC message id (hex, as most SMSCs answer in submit_sm_resp)."""
        self._counter += 1
        return format(self._counter, "08X")

    def start(self) -> FakeSmsc:
        """Listen on the port."""
        self._thread.start()
        self._call(self._listen())
        return self

    async def _listen(self) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            session = _Session(self, reader, writer)
            self.sessions.add(session)
            await session.run()

        self._server = await asyncio.start_server(accept, "127.0.0.1", self.port)

    def _call(self, coro: Any, timeout: float = 20) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout)

    def stop(self) -> None:
        """Close every connection and the listener, then the loop."""
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _shutdown(self) -> None:
        await self._drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def drop_connections(self) -> None:
        """Cut every ESME connection (the ESME must reconnect and bind again)."""
        self._call(self._drop())

    async def _drop(self) -> None:
        for session in list(self.sessions):
            session.writer.close()
        await asyncio.sleep(0.05)

    def _receiver(self) -> _Session:
        for session in self.sessions:
            if session.bound in (BIND_RECEIVER, BIND_TRANSCEIVER):
                return session
        raise RuntimeError("no ESME bound as receiver")

    async def deliver_receipt(self, part: SubmittedPart) -> None:
        """Send the delivery receipt of one part (SMPP 3.4 Appendix B text, optionally TLVs)."""
        st = self.state
        receipt_id = str(int(part.message_id, 16)) if st.receipt_id_style == "decimal" else part.message_id
        stamp = dt.datetime.now(dt.UTC).strftime("%y%m%d%H%M")
        text = (f"id:{receipt_id} sub:001 dlvrd:001 submit date:{stamp} done date:{stamp} stat:DELIVRD err:000 "
                "text:").encode()
        tlvs = b""
        if st.receipt_with_tlv:
            rid = receipt_id.encode() + b"\x00"
            tlvs = struct.pack(">HH", TLV_RECEIPTED_MESSAGE_ID, len(rid)) + rid + struct.pack(
                ">HHB", TLV_MESSAGE_STATE, 1, 2)
        try:
            session = self._receiver()
        except RuntimeError:
            return
        await session.deliver(source=part.destination, destination=part.source, esm_class=0x04, data_coding=0,
                              short_message=text, tlvs=tlvs, what=f"receipt:{receipt_id}")

    def send_mo(self, source: str, text: str, *, destination: str = "10690000") -> int:
        """A citizen's SMS: UCS-2, split with 8-bit-reference UDH when longer than 70 characters."""
        return int(self._call(self._mo(source, text, destination)))

    async def _mo(self, source: str, text: str, destination: str) -> int:
        session = self._receiver()
        data = text.encode("utf-16-be")
        if len(data) <= 140:
            return await session.deliver(source=source, destination=destination, esm_class=0, data_coding=8,
                                         short_message=data, what="mo")
        chunks = [data[i:i + 134] for i in range(0, len(data), 134)]
        status = ESME_ROK
        for seq, chunk in enumerate(chunks, start=1):
            udh = bytes([5, 0, 3, 0x5A, len(chunks), seq])
            status = await session.deliver(source=source, destination=destination, esm_class=0x40, data_coding=8,
                                           short_message=udh + chunk, what=f"mo:{seq}")
        return status
