"""SIP test phones for the real-Asterisk tests; the only module that imports pyVoIP (GPL-3.0, optional extra `voip`).

A `SeatPhone` registers as a seat extension (80xx) and answers when told to; a `CitizenPhone` plays the
carrier side of the trunk: it sends calls from the carrier's address (IP-authenticated, no REGISTER, as a
real carrier) and receives the callbacks the PBX sends to the carrier.
"""

from __future__ import annotations

import math
import random
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

with warnings.catch_warnings():
    # pyVoIP imports audioop, deprecated in Python 3.11+ (kept out of the app's import path anyway).
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyVoIP.VoIP import CallState, InvalidStateError, PhoneStatus, VoIPCall, VoIPPhone
    from pyVoIP.SIP import Counter  # isort: skip - pyVoIP.SIP must load after pyVoIP.VoIP

SILENCE = b"\x80" * 160  # 20 ms of 8-bit unsigned PCM silence
# 20 ms of a 400 Hz tone (8-bit unsigned PCM, 8 kHz): a "voice" that silence detection does not cut off.
TONE = bytes(int(128 + 60 * math.sin(2 * math.pi * 400 * i / 8000)) for i in range(160))


@dataclass
class _Incoming:
    call: VoIPCall
    at: float = field(default_factory=time.monotonic)


class _Phone:
    """Common part: remembers incoming calls and answers them on request."""

    def __init__(self, *, server: str, server_port: int, username: str, password: str, my_ip: str, sip_port: int,
                 rtp_low: int) -> None:
        self.incoming: list[_Incoming] = []
        self.answer_automatically = False
        self.hangup_after: float | None = None  # with answer_automatically: talk this long, then hang up
        self._lock = threading.Lock()
        self._rang = threading.Condition(self._lock)
        self.phone = VoIPPhone(server, server_port, username, password, myIP=my_ip, callCallback=self._on_call,
                               sipPort=sip_port, rtpPortLow=rtp_low, rtpPortHigh=rtp_low + 99)
        # pyVoIP derives Via branches and Call-IDs from a counter starting at 1 in every phone: two phones in one
        # process would send INVITEs with the same branch, which the PBX takes for retransmissions.
        self.phone.sip.callID = Counter(random.randint(1, 2**31))

    def _on_call(self, call: VoIPCall) -> None:
        # pyVoIP has already sent 180 Ringing; this runs in its Timer thread about 1 s later.
        with self._rang:
            self.incoming.append(_Incoming(call))
            self._rang.notify_all()
        if self.answer_automatically:
            self._answer(call)
            if self.hangup_after is not None:
                timer = threading.Timer(self.hangup_after, self.hangup, args=(call,))
                timer.daemon = True
                timer.start()

    def _answer(self, call: VoIPCall) -> None:
        try:
            call.answer()
        except InvalidStateError:
            return
        threading.Thread(target=self._talk, args=(call,), daemon=True).start()

    @staticmethod
    def _talk(call: VoIPCall, audio: bytes = SILENCE) -> None:
        # Send audio so the RTP stream (and the recording) has media while the call is up.
        while call.state == CallState.ANSWERED:
            try:
                call.write_audio(audio)
            except Exception:  # noqa: BLE001 - the call ended under us
                return
            time.sleep(0.02)

    def wait_ringing(self, timeout: float = 10, count: int = 1) -> VoIPCall:
        """Wait until the `count`-th incoming call rings and return it."""
        deadline = time.monotonic() + timeout
        with self._rang:
            while len(self.incoming) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no incoming call")
                self._rang.wait(left)
            return self.incoming[count - 1].call

    def answer(self, call: VoIPCall) -> None:
        """Answer a ringing call and start sending audio."""
        self._answer(call)

    @staticmethod
    def hangup(call: VoIPCall) -> None:
        """Hang up an answered call (pyVoIP cannot cancel a ringing one)."""
        if call.state == CallState.ANSWERED:
            call.hangup()

    @staticmethod
    def wait_state(call: VoIPCall, state: Any, timeout: float = 10) -> None:
        """Wait until the call reaches `state` (CallState.ANSWERED / ENDED)."""
        deadline = time.monotonic() + timeout
        while call.state != state:
            if time.monotonic() > deadline:
                raise TimeoutError(f"call stayed {call.state}, expected {state}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Hang up everything and close the sockets."""
        try:
            self.phone.stop()
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass


class SeatPhone(_Phone):
    """A seat's desk phone: registers as its extension."""

    def __init__(self, extension: str, password: str, *, server: str = "127.0.0.1", server_port: int = 5060,
                 sip_port: int = 5070, rtp_low: int = 30000) -> None:
        """Prepare the phone; `start()` registers it."""
        super().__init__(server=server, server_port=server_port, username=extension, password=password,
                         my_ip="127.0.0.1", sip_port=sip_port, rtp_low=rtp_low)
        self.extension = extension

    def start(self) -> SeatPhone:
        """Register (raises when Asterisk refuses)."""
        self.phone.start()
        if self.phone.get_status() != PhoneStatus.REGISTERED:
            raise RuntimeError(f"seat {self.extension} did not register: {self.phone.get_status()}")
        return self


class CitizenPhone(_Phone):
    """The citizen behind the carrier trunk: calls from the carrier address, receives calls sent to the carrier."""

    def __init__(self, number: str, *, carrier_ip: str = "127.0.0.2", carrier_port: int = 5062,
                 server: str = "127.0.0.1", server_port: int = 5060, rtp_low: int = 30500) -> None:
        """`number` is the caller id the carrier presents (pyVoIP puts its username into From)."""
        super().__init__(server=server, server_port=server_port, username=number, password="", my_ip=carrier_ip,
                         sip_port=carrier_port, rtp_low=rtp_low)
        # A carrier trunk is IP-authenticated and never registers.
        self.phone.sip.register = lambda: True  # type: ignore[method-assign]

    def start(self) -> CitizenPhone:
        """Open the SIP socket."""
        self.phone.start()
        return self

    def dial(self, number: str, *, timeout: float = 10, speak: bool = False) -> VoIPCall:
        """Call a hotline number and wait until the PBX answers (the hotline answers before queueing)."""
        call = self.phone.call(number)
        self.wait_state(call, CallState.ANSWERED, timeout)
        threading.Thread(target=self._talk, args=(call, TONE if speak else SILENCE), daemon=True).start()
        return call


__all__ = ["CallState", "CitizenPhone", "SeatPhone"]
