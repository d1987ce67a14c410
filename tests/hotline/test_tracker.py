"""The call tracker on AMI traces recorded from the real Asterisk 22 with the shipped config."""

from __future__ import annotations

from hotline.client import AmiEvent, to_event
from hotline.tracker import CallChange, CallTracker, Change, Effect, Purpose, SeatState, SurveyDigit
from tests.hotline.ami_trace import load_events, parse_blocks, split_trace


def run(events: list[AmiEvent]) -> tuple[CallTracker, list[Effect]]:
    out: list[Effect] = []
    tracker = CallTracker(out.append)
    tracker.handle_all(events)
    return tracker, out


def changes(effects: list[Effect], kind: Change | None = None) -> list[CallChange]:
    return [e for e in effects if isinstance(e, CallChange) and (kind is None or e.kind == kind)]


def event(text: str) -> AmiEvent:
    return to_event(parse_blocks(text)[0], received_at=1.8e9)


def test_two_concurrent_calls_are_kept_apart_by_linkedid() -> None:
    tracker, effects = run(load_events("two_calls.txt"))
    ended = {c.call.caller: c.call for c in changes(effects, Change.ENDED)}
    assert set(ended) == {"13812345678", "13987654321"}
    first, second = ended["13812345678"], ended["13987654321"]
    assert (first.seat, first.member) == ("8001", "zhangsan")
    assert (second.seat, second.member) == ("8002", "lisi")
    for call in (first, second):
        assert call.purpose == Purpose.HOTLINE and call.direction == "in"
        assert call.did == "12319" and call.queue == "hotline-12319"
        assert call.started_at <= call.queued_at <= call.ringing_at <= call.answered_at <= call.ended_at
        assert call.recording == f"hotline/{call.recording.split('/')[1]}/12319-{call.linkedid}.wav"
        assert call.hangup_cause == "Normal Clearing" and not call.abandoned
    assert first.linkedid != second.linkedid
    assert tracker.calls == {}  # both closed, nothing left live
    # Per call: started → queued → ringing (screen pop) → connected → ended, in that order.
    for linkedid in (first.linkedid, second.linkedid):
        kinds = [c.kind for c in changes(effects) if c.call.linkedid == linkedid and c.kind != Change.RECORDING]
        assert kinds == [Change.STARTED, Change.QUEUED, Change.RINGING, Change.CONNECTED, Change.ENDED]
    ringing = changes(effects, Change.RINGING)
    assert {(r.member, r.seat) for r in ringing} == {("zhangsan", "8001"), ("lisi", "8002")}


def test_unknown_and_unrelated_events_are_ignored() -> None:
    baseline = [(c.kind, c.call.linkedid, c.member) for c in changes(run(load_events("two_calls.txt"))[1])]
    noise = [
        event("Event: RTCPSent\nChannel: PJSIP/carrier-00000001\nLinkedid: 1795324583.17\nSSRC: 1"),
        event("Event: SomethingAsterisk23Adds\nFoo: bar"),
        event("Event: VarSet\nChannel: PJSIP/8001-00000003\nVariable: X\nValue: 1"),
        event("Event: UserEvent\nUserEvent: NotOurs\nChannel: PJSIP/8001-0000000a"),
        event("Event: Hangup\nChannel: PJSIP/8001-000000ff\nUniqueid: 9.9\nLinkedid: 9.9\nCause: 16"),
        event("Event: AgentConnect\nLinkedid: 42.42\nMemberName: ghost\nInterface: PJSIP/8009"),
        event("Event: Newchannel\nChannel: PJSIP/8001-00000077\nUniqueid: 7.7\nLinkedid: 7.7\nContext: seats\n"
              "Exten: 8002"),  # a seat-to-seat call: not a citizen call
        event("Response: Success\nMessage: stray"),
    ]
    events = load_events("two_calls.txt")
    mixed: list[AmiEvent] = []
    for i, e in enumerate(events):
        mixed.append(e)
        mixed.append(noise[i % len(noise)])
    tracker, effects = run(mixed)
    assert [(c.kind, c.call.linkedid, c.member) for c in changes(effects)] == baseline
    assert tracker.ignored >= len(events) // len(noise)
    assert tracker.calls == {}


def test_abandoned_call_is_closed_as_abandoned() -> None:
    _, effects = run(load_events("abandoned.txt"))
    (ended,) = changes(effects, Change.ENDED)
    call = ended.call
    assert call.abandoned and call.answered_at is None and call.queued_at is not None
    assert call.ringing_at is None  # both seats were paused: nobody rang
    assert call.queue == "hotline-12319" and call.caller == "13812345678"


def test_after_hours_message_is_tracked() -> None:
    _, effects = run(load_events("after_hours.txt"))
    (voicemail,) = changes(effects, Change.VOICEMAIL)
    assert voicemail.call.voicemail_reason == "after_hours"
    assert voicemail.call.voicemail.startswith("voicemail/") and voicemail.call.did == "12345"
    (ended,) = changes(effects, Change.ENDED)
    assert ended.call.voicemail == voicemail.call.voicemail and not ended.call.abandoned


def test_state_is_rebuilt_from_a_snapshot_after_reconnect() -> None:
    trace = split_trace("two_calls.txt")
    # A fresh tracker (the app restarted mid-call) learns both live calls from QueueStatus + CoreShowChannels.
    tracker, effects = run([])
    tracker.rebuild(channels=trace.replies["snap-ch"], queue_status=trace.replies["snap-qs"], now=2e9)
    started = changes(effects, Change.STARTED)
    assert len(started) == 2 and all(c.call.restored for c in started)
    connected = {c.call.caller: c.seat for c in changes(effects, Change.CONNECTED)}
    assert connected == {"13812345678": "8001", "13987654321": "8002"}
    seats = {e.member: e for e in effects if isinstance(e, SeatState)}
    assert set(seats) == {"zhangsan", "lisi"} and all(s.extension in ("8001", "8002") for s in seats.values())
    # Rebuilding again changes nothing (idempotent), and the live events that follow close both calls.
    before = len(effects)
    tracker.rebuild(channels=trace.replies["snap-ch"], queue_status=trace.replies["snap-qs"], now=2e9)
    assert not changes(effects[before:])
    tracker.handle_all(trace.after)
    ended = changes(effects, Change.ENDED)
    assert {c.call.caller for c in ended} == {"13812345678", "13987654321"}
    assert all(c.call.answered_at is not None and c.call.seat for c in ended)


def test_calls_that_vanished_during_an_outage_are_closed_not_lost() -> None:
    trace = split_trace("two_calls.txt")
    tracker, effects = run(trace.before)
    assert len(tracker.calls) == 2
    # The PBX restarted while we were disconnected: its snapshot has no channels any more.
    tracker.rebuild(channels=[], queue_status=trace.replies["snap-qs"], now=2e9, lost_at=1.9e9)
    ended = changes(effects, Change.ENDED)
    assert len(ended) == 2 and tracker.calls == {}
    assert all(c.call.ended_at == 1.9e9 and c.call.answered_at for c in ended)
    assert all(c.call.hangup_cause == "ended while the PBX link was down" for c in ended)
    tracker.handle_all(trace.after)  # their late Hangups are harmless
    assert len(changes(effects, Change.ENDED)) == 2


def test_survey_answer_and_originated_calls() -> None:
    tracker, effects = run([
        event("Event: Newchannel\nChannel: PJSIP/carrier-00000009\nUniqueid: sv-abc\nLinkedid: sv-abc\n"
              "Context: survey\nExten: s\nChannelState: 0\nChanVariable: JOB_ID=sv-job1"),
        event("Event: Newstate\nChannel: PJSIP/carrier-00000009\nUniqueid: sv-abc\nLinkedid: sv-abc\n"
              "ChannelState: 6\nTimestamp: 100.5"),
        event("Event: UserEvent\nUserEvent: SurveyResult\nJobId: sv-job1\nCaseId: 7\nDigit: 3\nLinkedid: sv-abc"),
        event("Event: Hangup\nChannel: PJSIP/carrier-00000009\nUniqueid: sv-abc\nLinkedid: sv-abc\nCause: 16\n"
              "Cause-txt: Normal Clearing\nTimestamp: 110.0"),
    ])
    (digit,) = [e for e in effects if isinstance(e, SurveyDigit)]
    assert (digit.job_id, digit.case_id, digit.digit) == ("sv-job1", "7", "3")
    (ended,) = changes(effects, Change.ENDED)
    assert ended.call.purpose == Purpose.SURVEY and ended.call.answered_at == 100.5 and ended.call.ended_at == 110.0
