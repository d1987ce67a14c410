"""The call state machine: AMI events in, call and seat changes out; pure (no I/O), so traces replay in tests.

Calls are keyed by Linkedid (the citizen leg's Uniqueid on inbound calls, the originated leg's on callbacks),
legs by Uniqueid. Unknown events, and events of calls we do not follow (seat-to-seat calls), are ignored.
After every (re)connect the state is rebuilt from QueueStatus and CoreShowChannels (`rebuild`): calls that
vanished meanwhile are closed, calls that appeared are picked up, and live events then apply as upserts.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hotline.client import AmiEvent

log = logging.getLogger(__name__)

ROOT_CONTEXTS = {"from-carrier": "hotline", "hotline": "hotline"}
LATE_EVENT_GRACE = 30.0  # seconds a closed call still absorbs its late events (AgentComplete after Hangup)


class Purpose(enum.StrEnum):
    """Why the call exists."""

    HOTLINE = "hotline"
    CALLBACK = "callback"
    SURVEY = "survey"


class Change(enum.StrEnum):
    """What happened to a call."""

    STARTED = "started"
    QUEUED = "queued"
    RINGING = "ringing"
    RING_STOPPED = "ring_stopped"
    CONNECTED = "connected"
    RECORDING = "recording"
    VOICEMAIL = "voicemail"
    ENDED = "ended"


@dataclass(slots=True)
class Leg:
    """One channel of a call."""

    uniqueid: str
    channel: str
    up: bool = False
    bridge: str | None = None


@dataclass(slots=True)
class CallState:
    """Everything known about one live call."""

    linkedid: str
    purpose: Purpose
    direction: str  # "in" or "out"
    caller: str = ""  # inbound: the citizen's caller id; outbound: the number dialled
    did: str | None = None
    queue: str | None = None
    job_id: str | None = None
    case_id: str | None = None
    started_at: float = 0.0
    queued_at: float | None = None
    ringing_at: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    seat: str | None = None
    member: str | None = None
    recording: str | None = None
    voicemail: str | None = None
    voicemail_reason: str | None = None
    hangup_cause: str | None = None
    abandoned: bool = False
    restored: bool = False
    ringing: dict[str, str] = field(default_factory=dict)  # member name → seat extension now ringing
    legs: dict[str, Leg] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallChange:
    """A change of one call, with a copy of the call as it is after the change."""

    kind: Change
    call: CallState
    at: float
    member: str | None = None
    seat: str | None = None


@dataclass(frozen=True, slots=True)
class SeatState:
    """A queue member as Asterisk reports it (the source of truth for seats)."""

    interface: str
    member: str
    queue: str
    status: int
    paused: bool
    reason: str
    in_call: bool
    calls_taken: int
    last_call: int
    login_time: int
    removed: bool = False

    @property
    def extension(self) -> str:
        """'PJSIP/8001' → '8001'."""
        return self.interface.split("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class SurveyDigit:
    """A 回访 answer pressed on the keypad (UserEvent SurveyResult)."""

    job_id: str
    case_id: str
    digit: str
    at: float


Effect = CallChange | SeatState | SurveyDigit


@dataclass(frozen=True, slots=True)
class Expected:
    """A call we are about to originate (its ChannelId is known in advance)."""

    purpose: Purpose
    job_id: str
    number: str
    did: str | None = None
    case_id: str | None = None


def seat_of(channel_or_interface: str) -> str | None:
    """'PJSIP/8001-0000001a' or 'PJSIP/8001' → '8001'; None for other technologies."""
    if not channel_or_interface.startswith("PJSIP/"):
        return None
    name = channel_or_interface[6:].rsplit("-", 1)[0]
    return name if name.isdigit() else None


def _var(event: AmiEvent, name: str) -> str | None:
    value = event.variables.get(name)
    return value or None


def _duration(text: str) -> float:
    """'00:01:05' → 65.0."""
    try:
        h, m, s = (int(x) for x in text.split(":"))
    except ValueError:
        return 0.0
    return float(h * 3600 + m * 60 + s)


class CallTracker:
    """Follows every hotline call from AMI events and reports changes through `emit`."""

    def __init__(self, emit: Callable[[Effect], None]) -> None:
        """`emit` receives each change, in order; it must be quick (queue it)."""
        self.emit = emit
        self.calls: dict[str, CallState] = {}
        self.closed: dict[str, float] = {}  # linkedid → when it ended (late-event grace)
        self.expected: dict[str, Expected] = {}  # originate ChannelId → what it is for
        self.seats: dict[tuple[str, str], SeatState] = {}  # (queue, interface) → member
        self.ignored = 0
        self.handlers: dict[str, Callable[[AmiEvent], None]] = {
            "Newchannel": self._newchannel,
            "Newstate": self._newstate,
            "Hangup": self._hangup,
            "DialEnd": self._dialend,
            "BridgeEnter": self._bridge_enter,
            "BridgeLeave": self._bridge_leave,
            "MixMonitorStart": self._mixmonitor,
            "QueueCallerJoin": self._queue_join,
            "QueueCallerAbandon": self._queue_abandon,
            "AgentCalled": self._agent_called,
            "AgentRingNoAnswer": self._agent_ring_stopped,
            "AgentConnect": self._agent_connect,
            "QueueMemberAdded": self._member,
            "QueueMemberStatus": self._member,
            "QueueMemberPause": self._member,
            "QueueMemberRemoved": self._member_removed,
            "UserEvent": self._user_event,
        }

    # --- entry points -----------------------------------------------------------------------------------

    def expect(self, channel_id: str, expected: Expected) -> None:
        """Announce an Originate before sending it, so its first event is recognised."""
        self.expected[channel_id] = expected

    def handle(self, event: AmiEvent) -> None:
        """Apply one event; anything we do not use is counted and ignored."""
        handler = self.handlers.get(event.name)
        if handler is None:
            self.ignored += 1
            return
        handler(event)

    def handle_all(self, events: Iterable[AmiEvent]) -> None:
        """Apply events in order."""
        for event in events:
            self.handle(event)

    def expire(self, now: float) -> None:
        """Forget closed calls whose late-event grace is over."""
        for linkedid, ended in list(self.closed.items()):
            if now - ended > LATE_EVENT_GRACE:
                del self.closed[linkedid]

    # --- rebuild after a (re)connect ----------------------------------------------------------------------

    def rebuild(self, *, channels: list[AmiEvent], queue_status: list[AmiEvent], now: float,
                lost_at: float | None = None) -> None:
        """Replace the state by the PBX's snapshot: close vanished calls, pick up unknown ones, refresh seats."""
        groups: dict[str, list[AmiEvent]] = {}
        for channel in channels:
            if channel.name == "CoreShowChannel" and channel.get("Linkedid"):
                groups.setdefault(channel.get("Linkedid"), []).append(channel)
        for linkedid, call in list(self.calls.items()):
            if linkedid not in groups:
                # It ended while we were not listening: close it with what we know (never lose the record).
                call.hangup_cause = call.hangup_cause or "ended while the PBX link was down"
                self._end(call, lost_at or now)
        waiting = {e.get("Uniqueid"): e for e in queue_status if e.name == "QueueEntry"}
        for linkedid, legs in groups.items():
            self._restore(linkedid, legs, waiting, now)
        seen: set[tuple[str, str]] = set()
        for member in queue_status:
            if member.name == "QueueMember":
                state = self._seat_from(member, interface=member.get("Location") or member.get("Interface"),
                                        name=member.get("Name") or member.get("MemberName"))
                seen.add((state.queue, state.interface))
                self.seats[(state.queue, state.interface)] = state
                self.emit(state)
        for key, state in list(self.seats.items()):
            if key not in seen:
                del self.seats[key]
                self.emit(dataclasses.replace(state, removed=True))

    def _restore(self, linkedid: str, legs: list[AmiEvent], waiting: dict[str, AmiEvent], now: float) -> None:
        root = next((leg for leg in legs if leg.get("Uniqueid") == linkedid), legs[0])
        call = self.calls.get(linkedid)
        if call is None:
            call = self._new_call(root, at=now - _duration(root.get("Duration")))
            if call is None:
                return
            call.restored = True
            self.emit(CallChange(Change.STARTED, self._copy(call), call.started_at))
        for leg_event in legs:
            uid = leg_event.get("Uniqueid")
            leg = call.legs.setdefault(uid, Leg(uid, leg_event.get("Channel")))
            leg.up = leg_event.get("ChannelState") == "6"
            leg.bridge = leg_event.get("BridgeId") or None
            self._absorb_vars(call, leg_event)
        for uid in list(call.legs):
            if uid not in {leg.get("Uniqueid") for leg in legs}:
                del call.legs[uid]
        entry = waiting.get(root.get("Uniqueid"))
        if entry is not None and call.queued_at is None:
            call.queue = entry.get("Queue")
            call.queued_at = now - float(entry.get("Wait") or 0)
            self.emit(CallChange(Change.QUEUED, self._copy(call), call.queued_at))
        if call.answered_at is None and call.purpose == Purpose.HOTLINE:
            root_leg = call.legs.get(root.get("Uniqueid"))
            for leg in call.legs.values():
                seat = seat_of(leg.channel)
                if root_leg and seat and leg.bridge and leg.bridge == root_leg.bridge:
                    agent = next(e for e in legs if e.get("Uniqueid") == leg.uniqueid)
                    call.seat = seat
                    call.answered_at = now - _duration(agent.get("Duration"))
                    self.emit(CallChange(Change.CONNECTED, self._copy(call), call.answered_at, seat=seat))

    # --- event handlers --------------------------------------------------------------------------------

    def _new_call(self, event: AmiEvent, *, at: float) -> CallState | None:
        uid = event.get("Uniqueid")
        expected = self.expected.pop(uid, None)
        if expected is None and uid.startswith(("cb-", "sv-")):
            # Originated by an app process (any of them): the ChannelId we chose says what it is for;
            # the app has stored the rest on the call record before sending the Originate.
            purpose = Purpose.CALLBACK if uid.startswith("cb-") else Purpose.SURVEY
            expected = Expected(purpose=purpose, job_id=_var(event, "JOB_ID") or "", number="",
                                did=_var(event, "DID"), case_id=_var(event, "CASE_ID"))
        if expected is not None:
            call = CallState(linkedid=uid, purpose=expected.purpose, direction="out", caller=expected.number,
                             did=expected.did, job_id=expected.job_id, case_id=expected.case_id, started_at=at)
        else:
            context = event.get("Context")
            job = _var(event, "JOB_ID")
            if ROOT_CONTEXTS.get(context) == "hotline":
                call = CallState(linkedid=uid, purpose=Purpose.HOTLINE, direction="in",
                                 caller=event.get("CallerIDNum"), did=_var(event, "DID") or event.get("Exten"),
                                 started_at=at)
            elif job and context in ("callback", "survey"):
                # An originated call we did not announce (another process, or before our restart).
                purpose = Purpose.CALLBACK if context == "callback" else Purpose.SURVEY
                call = CallState(linkedid=uid, purpose=purpose, direction="out", job_id=job,
                                 caller=event.get("Exten") if purpose == Purpose.CALLBACK else "",
                                 did=_var(event, "DID"), case_id=_var(event, "CASE_ID"), started_at=at)
            else:
                return None  # seat-to-seat and other internal calls are not citizen calls
        call.legs[uid] = Leg(uid, event.get("Channel"))
        self.calls[uid] = call
        return call

    def _call(self, event: AmiEvent) -> CallState | None:
        return self.calls.get(event.get("Linkedid"))

    def _absorb_vars(self, call: CallState, event: AmiEvent) -> None:
        did = _var(event, "DID")
        if did and call.purpose == Purpose.HOTLINE:
            call.did = did
        elif did and not call.did:
            call.did = did
        recfile = _var(event, "RECFILE")
        if recfile and call.recording != recfile:
            call.recording = recfile
        vmfile = _var(event, "VMFILE")
        if vmfile and call.voicemail is None:
            call.voicemail = vmfile

    def _newchannel(self, event: AmiEvent) -> None:
        uid, linkedid = event.get("Uniqueid"), event.get("Linkedid")
        if uid == linkedid:
            if uid in self.calls:
                return  # already restored from a snapshot
            call = self._new_call(event, at=event.at)
            if call is not None:
                self.emit(CallChange(Change.STARTED, self._copy(call), call.started_at))
            return
        call = self.calls.get(linkedid)
        if call is not None:
            call.legs.setdefault(uid, Leg(uid, event.get("Channel")))

    def _newstate(self, event: AmiEvent) -> None:
        call = self._call(event)
        if call is None:
            return
        self._absorb_vars(call, event)
        leg = call.legs.get(event.get("Uniqueid"))
        if leg is not None:
            leg.up = event.get("ChannelState") == "6"
        if (call.purpose == Purpose.SURVEY and leg is not None and leg.up and leg.uniqueid == call.linkedid
                and call.answered_at is None):
            # A 回访 call is answered when the citizen picks up the originated carrier leg.
            call.answered_at = event.at
            self.emit(CallChange(Change.CONNECTED, self._copy(call), event.at))

    def _dialend(self, event: AmiEvent) -> None:
        call = self._call(event)
        if call is None or call.purpose == Purpose.HOTLINE or event.get("DialStatus") != "ANSWER":
            return
        # Callbacks: the seat dialled the citizen through the carrier and they answered.
        if event.get("DestChannel").startswith("PJSIP/carrier") and call.answered_at is None:
            call.answered_at = event.at
            call.seat = call.seat or seat_of(event.get("Channel"))
            self.emit(CallChange(Change.CONNECTED, self._copy(call), event.at, seat=call.seat))

    def _bridge_enter(self, event: AmiEvent) -> None:
        call = self._call(event)
        if call is None:
            return
        leg = call.legs.get(event.get("Uniqueid"))
        if leg is not None:
            leg.bridge = event.get("BridgeUniqueid") or None

    def _bridge_leave(self, event: AmiEvent) -> None:
        call = self._call(event)
        leg = call.legs.get(event.get("Uniqueid")) if call else None
        if leg is not None:
            leg.bridge = None

    def _mixmonitor(self, event: AmiEvent) -> None:
        call = self._call(event)
        if call is None:
            return
        self._absorb_vars(call, event)
        if call.recording:
            self.emit(CallChange(Change.RECORDING, self._copy(call), event.at))

    def _queue_join(self, event: AmiEvent) -> None:
        call = self._call(event)
        if call is None:
            return
        self._absorb_vars(call, event)
        call.queue = event.get("Queue")
        if call.queued_at is None:
            call.queued_at = event.at
        self.emit(CallChange(Change.QUEUED, self._copy(call), event.at))

    def _queue_abandon(self, event: AmiEvent) -> None:
        call = self._call(event)
        if call is not None:
            call.abandoned = True

    def _agent_called(self, event: AmiEvent) -> None:
        call = self._call(event)
        if call is None:
            return
        self._absorb_vars(call, event)
        member = event.get("MemberName")
        seat = seat_of(event.get("Interface")) or seat_of(event.get("DestChannel")) or ""
        call.ringing[member] = seat
        call.queue = call.queue or event.get("Queue")
        if call.ringing_at is None:
            call.ringing_at = event.at
        self.emit(CallChange(Change.RINGING, self._copy(call), event.at, member=member, seat=seat))

    def _agent_ring_stopped(self, event: AmiEvent) -> None:
        call = self._call(event)
        if call is None:
            return
        member = event.get("MemberName")
        seat = call.ringing.pop(member, None)
        self.emit(CallChange(Change.RING_STOPPED, self._copy(call), event.at, member=member, seat=seat))

    def _agent_connect(self, event: AmiEvent) -> None:
        call = self._call(event)
        if call is None:
            return
        member = event.get("MemberName")
        seat = seat_of(event.get("Interface")) or seat_of(event.get("DestChannel"))
        call.member, call.seat = member, seat
        call.answered_at = event.at
        others = {m: s for m, s in call.ringing.items() if m != member}
        call.ringing = {}
        for other, other_seat in others.items():
            self.emit(CallChange(Change.RING_STOPPED, self._copy(call), event.at, member=other, seat=other_seat))
        self.emit(CallChange(Change.CONNECTED, self._copy(call), event.at, member=member, seat=seat))

    def _hangup(self, event: AmiEvent) -> None:
        linkedid = event.get("Linkedid")
        call = self.calls.get(linkedid)
        if call is None:
            return
        uid = event.get("Uniqueid")
        if uid == linkedid or not call.hangup_cause:
            # The citizen's leg (the root) has the cause that matters; another leg's is kept until then.
            call.hangup_cause = event.get("Cause-txt") or event.get("Cause")
        self._absorb_vars(call, event)
        call.legs.pop(uid, None)
        if not call.legs:
            self._end(call, event.at)

    def _end(self, call: CallState, at: float) -> None:
        call.ended_at = at
        if call.purpose == Purpose.HOTLINE and call.answered_at is None and call.voicemail is None:
            call.abandoned = True
        for member, seat in call.ringing.items():
            self.emit(CallChange(Change.RING_STOPPED, self._copy(call), at, member=member, seat=seat))
        call.ringing = {}
        self.calls.pop(call.linkedid, None)
        self.closed[call.linkedid] = at
        self.emit(CallChange(Change.ENDED, self._copy(call), at))

    def _user_event(self, event: AmiEvent) -> None:
        kind = event.get("UserEvent")
        if kind == "SurveyResult":
            self.emit(SurveyDigit(job_id=event.get("JobId"), case_id=event.get("CaseId"),
                                  digit=event.get("Digit"), at=event.at))
        elif kind == "HotlineClosed":
            call = self._call(event)
            if call is not None:
                call.voicemail_reason = "after_hours"
        elif kind == "HotlineVoicemail":
            call = self._call(event)
            if call is None:
                return
            call.voicemail = event.get("File") or call.voicemail
            call.voicemail_reason = event.get("Reason") or None
            self.emit(CallChange(Change.VOICEMAIL, self._copy(call), event.at))
        else:
            self.ignored += 1

    def _seat_from(self, event: AmiEvent, *, interface: str, name: str) -> SeatState:
        def num(key: str) -> int:
            try:
                return int(event.get(key) or 0)
            except ValueError:
                return 0

        return SeatState(interface=interface, member=name, queue=event.get("Queue"), status=num("Status"),
                         paused=event.get("Paused") == "1", reason=event.get("PausedReason"),
                         in_call=event.get("InCall") == "1", calls_taken=num("CallsTaken"),
                         last_call=num("LastCall"), login_time=num("LoginTime"))

    def _member(self, event: AmiEvent) -> None:
        state = self._seat_from(event, interface=event.get("Interface"), name=event.get("MemberName"))
        self.seats[(state.queue, state.interface)] = state
        self.emit(state)

    def _member_removed(self, event: AmiEvent) -> None:
        state = self._seat_from(event, interface=event.get("Interface"), name=event.get("MemberName"))
        self.seats.pop((state.queue, state.interface), None)
        self.emit(dataclasses.replace(state, removed=True))

    @staticmethod
    def _copy(call: CallState) -> CallState:
        return dataclasses.replace(call, ringing=dict(call.ringing), legs={})
