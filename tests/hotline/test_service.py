"""The hotline service on both databases: recorded traces become call records, pops, missed calls; 回访; wallboard."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core.bus import Event
from core.cases.models import Case, DraftCase
from core.db import utcnow
from hotline import service
from hotline.client import AmiEvent, AmiReply, OriginateResult, Reconnected, to_event
from hotline.models import Call, CallOutcome, CallPurpose, SurveyCall, SurveyStatus
from hotline.runtime import HotlineService
from tests.conftest import Api, create_operator_sync
from tests.hotline.ami_trace import load_events, parse_blocks, split_trace
from tests.hotline.test_tracker import event


class ScriptedAmi:
    """An AmiClient whose events the test feeds and whose action replies it scripts."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[AmiEvent | Reconnected] = asyncio.Queue()
        self.connected = True
        self.detail = "scripted"
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.replies: dict[str, list[AmiEvent]] = {}

    async def start(self) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def action(self, name: str, fields: Mapping[str, str | Sequence[str]] | None = None, *,
                     wait_seconds: float | None = None, as_list: bool | None = None) -> AmiReply:
        self.sent.append((name, dict(fields or {})))
        return AmiReply("Success", "", {}, self.replies.get(name, []))

    async def originate(self, **kwargs: Any) -> OriginateResult:
        self.sent.append(("Originate", kwargs))
        return OriginateResult(answered=True, reason="4", channel=kwargs["channel"], uniqueid=kwargs["channel_id"])


def start_service(api: Api, recordings: Path, ami: ScriptedAmi | None = None) -> tuple[HotlineService, ScriptedAmi]:
    async def _start() -> tuple[HotlineService, ScriptedAmi]:
        client = ami or ScriptedAmi()
        hotline = HotlineService(api.ctx, client, recordings_dir=recordings)  # type: ignore[arg-type]
        api.ctx.hotline = hotline
        api.ctx.closers.append(hotline.stop)
        await hotline.start()
        for _ in range(200):  # on PostgreSQL leadership comes from an advisory lock, a moment later
            if hotline.leader and client.events.empty():
                break
            await asyncio.sleep(0.02)
        assert hotline.leader
        return hotline, client

    result: tuple[HotlineService, ScriptedAmi] = api.run(_start)
    return result


def feed(api: Api, hotline: HotlineService, ami: ScriptedAmi, events: list[AmiEvent]) -> list[Event]:
    """Feed events, wait until every change is stored, return the live events published meanwhile."""

    async def _feed() -> list[Event]:
        published: list[Event] = []
        stream = api.ctx.bus.subscribe()
        collector = asyncio.ensure_future(_collect(stream, published))
        await asyncio.sleep(0)
        for item in events:
            ami.events.put_nowait(item)
        for _ in range(500):
            await asyncio.sleep(0.01)
            if ami.events.empty() and hotline._effects.empty() and hotline._effects._unfinished_tasks == 0:  # type: ignore[attr-defined]
                break
        await asyncio.sleep(0.05)
        collector.cancel()
        return published

    result: list[Event] = api.run(_feed)
    return result


async def _collect(stream: Any, out: list[Event]) -> None:
    async for item in stream:
        out.append(item)


def query(api: Api, stmt: Any) -> list[Any]:
    async def _q() -> list[Any]:
        async with api.ctx.sessions() as session:
            return list(await session.scalars(stmt))

    result: list[Any] = api.run(_q)
    return result


def test_recorded_calls_become_records_with_screen_pops_for_their_operators(api: Api, tmp_path: Path) -> None:
    create_operator_sync(api, "zhangsan", role="agent", extension="8001")
    create_operator_sync(api, "lisi", role="agent", extension="8002")
    hotline, ami = start_service(api, tmp_path)
    published = feed(api, hotline, ami, load_events("two_calls.txt"))
    calls = query(api, select(Call).order_by(Call.id))
    assert len(calls) == 2
    by_caller = {c.caller: c for c in calls}
    assert set(by_caller) == {"+8613812345678", "+8613987654321"}
    for call, seat in ((by_caller["+8613812345678"], "8001"), (by_caller["+8613987654321"], "8002")):
        assert call.outcome == CallOutcome.ANSWERED and call.seat == seat and call.operator_id is not None
        assert call.did == "12319" and call.queue == "hotline-12319" and call.purpose == CallPurpose.HOTLINE
        assert call.recording_path and call.recording_path.endswith(f"{call.linkedid}.wav")
        assert call.talk_seconds and call.talk_seconds > 0 and call.wait_seconds is not None
        assert call.draft_id is not None and call.citizen_id is not None
    pops = [e for e in published if e.topic == "call.ringing"]
    assert len(pops) == 2 and {p.data["seat"] for p in pops} == {"8001", "8002"}
    for pop in pops:
        assert pop.data["operator_id"] == by_caller[
            "+8613812345678" if pop.data["seat"] == "8001" else "+8613987654321"].operator_id
        assert pop.data["caller_masked"] in ("138****5678", "139****4321") and pop.data["draft_id"]
        assert "13812345678" not in json.dumps(pop.data, ensure_ascii=False)
    topics = [e.topic for e in published]
    assert topics.count("call.connected") == 2 and topics.count("call.ended") == 2 and "call.missed" not in topics
    drafts = query(api, select(DraftCase))
    assert {d.channel.value for d in drafts} == {"hotline"} and all(d.claimed_by for d in drafts)
    # Replaying the same trace (a duplicate delivery) adds no second record.
    feed(api, hotline, ami, load_events("two_calls.txt"))
    assert len(query(api, select(Call))) == 2


def test_missed_calls_are_listed_and_a_message_becomes_a_voicemail_draft(api: Api, tmp_path: Path) -> None:
    hotline, ami = start_service(api, tmp_path)
    after_hours = load_events("after_hours.txt")
    vmfile = next(e.get("File") for e in after_hours if e.get("UserEvent") == "HotlineVoicemail")
    message = tmp_path / vmfile
    message.parent.mkdir(parents=True)
    message.write_bytes(b"RIFF" + b"\0" * 30_000)
    published = feed(api, hotline, ami, load_events("abandoned.txt") + after_hours)
    missed = api.get("/api/hotline/missed").json()
    assert [c["outcome"] for c in missed] == ["after_hours", "abandoned"]
    assert all(c["caller_masked"] == "138****5678" and not c["callback_done"] for c in missed)
    voicemail = missed[0]
    assert voicemail["has_message"] and voicemail["did"] == "12345" and voicemail["draft_id"]
    draft = api.get(f"/api/drafts/{voicemail['draft_id']}").json()
    assert draft["channel"] == "voicemail" and draft["media"][0]["kind"] == "recording"
    assert api.get(f"/api/hotline/calls/{voicemail['id']}/message").content == message.read_bytes()
    assert api.get(f"/api/hotline/calls/{missed[1]['id']}/message").status_code == 404
    assert [e.topic for e in published].count("call.missed") == 2


def test_callback_originates_from_the_operators_seat(api: Api, tmp_path: Path) -> None:
    hotline, ami = start_service(api, tmp_path)
    feed(api, hotline, ami, load_events("abandoned.txt"))
    (missed,) = api.get("/api/hotline/missed").json()
    no_seat = api.post(f"/api/hotline/missed/{missed['id']}/callback")
    assert no_seat.status_code == 409 and no_seat.json()["error"]["id"] == "no-extension"
    create_operator_sync(api, "wangwu", role="agent", extension="8005")
    from tests.conftest import PASSWORD

    agent = api.client.post("/api/session", json={"username": "wangwu", "password": PASSWORD}).json()
    started = api.client.post(f"/api/hotline/missed/{missed['id']}/callback",
                              headers={"X-CSRF-Token": agent["csrf_token"]})
    assert started.status_code == 202, started.text
    assert started.json()["purpose"] == "callback" and started.json()["seat"] == "8005"

    async def _settle() -> None:
        await asyncio.sleep(0.1)

    api.run(_settle)
    name, originate = ami.sent[-1]
    assert name == "Originate" and originate["channel"] == "PJSIP/8005" and originate["context"] == "callback"
    assert originate["exten"] == "13812345678" and originate["channel_id"].startswith("cb-")
    assert originate["variables"]["CALLBACK_DID"] == "12319"
    # When the citizen answers (the tracker sees the carrier leg answer), the missed call is done.
    cid = originate["channel_id"]
    feed(api, hotline, ami, [
        event(f"Event: Newchannel\nChannel: PJSIP/8005-00000001\nUniqueid: {cid}\nLinkedid: {cid}\nContext: callback"),
        event(f"Event: DialEnd\nChannel: PJSIP/8005-00000001\nUniqueid: {cid}\nLinkedid: {cid}\n"
              "DestChannel: PJSIP/carrier-00000002\nDialStatus: ANSWER"),
        event(f"Event: Hangup\nChannel: PJSIP/8005-00000001\nUniqueid: {cid}\nLinkedid: {cid}\nCause: 16"),
    ])
    assert api.get("/api/hotline/missed").json() == []
    callback = api.get(f"/api/hotline/calls/{started.json()['call_id']}").json()
    assert callback["outcome"] == "answered" and callback["callback_for_id"] == missed["id"]


def test_rebuild_after_reconnect_closes_calls_lost_meanwhile(api: Api, tmp_path: Path) -> None:
    hotline, ami = start_service(api, tmp_path)
    trace = split_trace("two_calls.txt")
    feed(api, hotline, ami, trace.before)
    assert len(hotline.tracker.calls) == 2
    ami.replies = {"CoreShowChannels": [], "QueueStatus": trace.replies["snap-qs"]}
    feed(api, hotline, ami, [Reconnected(2, 2e9, lost_at=1.9e9)])
    calls = query(api, select(Call))
    assert len(calls) == 2 and all(c.ended_at == dt.datetime.fromtimestamp(1.9e9, dt.UTC) for c in calls)
    assert all(c.outcome == CallOutcome.ANSWERED for c in calls)
    assert hotline.info()["last_resync"]["generation"] == 2 and hotline.info()["live_calls"] == 0


def closed_case(api: Api, phone: str) -> Case:
    from tests.core.test_intake_flow import dept, new_draft

    draft = new_draft(api, reporter={"name": "赵女士", "phone": phone})
    api.post(f"/api/drafts/{draft['id']}/accept", json={"case_type_code": "01002"})
    api.drain()
    number = api.get(f"/api/drafts/{draft['id']}").json()["case_number"]
    dept(api, number, "dispatch", department="drainage")
    dept(api, number, "handle")
    dept(api, number, "feedback", note="已修复")
    dept(api, number, "verify", passed=True)
    api.drain()
    (case,) = query(api, select(Case).where(Case.number == number))
    return case


def test_survey_digits_rate_the_case_and_bad_ones_are_flagged(api: Api) -> None:
    good, bad = closed_case(api, "13812345671"), closed_case(api, "13812345672")

    async def _schedule() -> int:
        async with api.ctx.uow() as session:
            return await service.schedule_surveys(session=session, delay=dt.timedelta(0), hours="00:00-24:00")

    assert api.run(_schedule) == 2
    assert api.run(_schedule) == 0  # once per case
    surveys = {s.case_id: s for s in query(api, select(SurveyCall))}

    async def _digit(job: str, digit: str) -> None:
        async with api.ctx.uow() as session:
            await service.record_survey_digit(session=session, job_id=job, digit=digit)

    api.run(_digit, surveys[good.id].job_id, "1")
    api.run(_digit, surveys[bad.id].job_id, "3")
    api.run(_digit, surveys[bad.id].job_id, "3")  # a replay changes nothing
    api.drain()
    rated = {s.case_id: s for s in query(api, select(SurveyCall))}
    assert (rated[good.id].status, rated[good.id].score, rated[good.id].needs_human_callback) == (
        SurveyStatus.RATED, 5, False)
    assert (rated[bad.id].status, rated[bad.id].score, rated[bad.id].needs_human_callback) == (
        SurveyStatus.RATED, 1, True)
    assert api.get(f"/api/cases/{bad.number}").json()["rating_score"] == 1
    flagged = api.get("/api/hotline/surveys/flagged").json()
    assert [f["case_id"] for f in flagged] == [bad.id] and flagged[0]["phone_masked"] == "138****5672"
    done = api.post(f"/api/hotline/surveys/{flagged[0]['id']}/done", json={"note": "已电话致歉并安排复查"})
    assert done.status_code == 200 and api.get("/api/hotline/surveys/flagged").json() == []


def test_survey_window_and_invalid_digits() -> None:
    shanghai_9pm = dt.datetime(2026, 11, 22, 13, 0, tzinfo=dt.UTC)
    assert not service.in_hours(shanghai_9pm, "09:00-20:00")
    nxt = service.next_window(shanghai_9pm, "09:00-20:00")
    assert nxt == dt.datetime(2026, 11, 23, 1, 0, tzinfo=dt.UTC)  # 09:00 next morning in Asia/Shanghai
    assert service.in_hours(shanghai_9pm, "00:00-24:00")
    assert service.national_number("+8613812345678") == "13812345678"
    assert service.national_number("+862787654321") == "02787654321"


def test_wallboard_combines_live_queue_and_todays_records(api: Api, tmp_path: Path) -> None:
    async def _calls() -> None:
        now = utcnow()
        async with api.ctx.uow() as session:
            for i, (outcome, wait, talk) in enumerate([(CallOutcome.ANSWERED, 8.0, 100.0),
                                                       (CallOutcome.ANSWERED, 30.0, 200.0),
                                                       (CallOutcome.ABANDONED, 40.0, None)]):
                session.add(Call(linkedid=f"w{i}", queue="hotline-12319", outcome=outcome, wait_seconds=wait,
                                 talk_seconds=talk, started_at=now))

    api.run(_calls)
    ami = None

    async def _ami() -> ScriptedAmi:
        client = ScriptedAmi()
        client.replies["QueueStatus"] = [to_event(b, received_at=0) for b in parse_blocks(
            "Event: QueueEntry\nQueue: hotline-12319\nWait: 42\n\nEvent: QueueEntry\nQueue: hotline-12319\nWait: 7\n\n"
            "Event: QueueMember\nQueue: hotline-12319\nStatus: 1\nPaused: 0\n\n"
            "Event: QueueMember\nQueue: hotline-12319\nStatus: 1\nPaused: 1\nPausedReason: 小休\n\n"
            "Event: QueueMember\nQueue: hotline-12319\nStatus: 2\nInCall: 1\nPaused: 0\n\n")]
        return client

    ami = api.run(_ami)
    start_service(api, tmp_path, ami)
    board = api.get("/api/hotline/wallboard").json()
    q = next(q for q in board["queues"] if q["queue"] == "hotline-12319")
    assert (q["answered"], q["abandoned"], q["answer_rate"], q["service_level"]) == (2, 1, 0.6667, 0.3333)
    assert q["aht_seconds"] == 150.0 + 15 and q["waiting"] == 2 and q["longest_wait_seconds"] == 42
    assert q["seats"] == {"logged_in": 3, "available": 1, "paused": 1, "in_call": 1, "wrapup": 0, "unavailable": 0}


def test_endpoints_without_a_pbx_and_bad_input(api: Api) -> None:
    assert api.get("/api/hotline/seat").status_code == 503
    assert api.get("/api/hotline/seat").json()["error"]["id"] == "hotline-not-configured"
    assert api.get("/api/hotline/calls").json() == []
    assert api.post("/api/hotline/seat/pause", json={"reason": "吃饭"}).status_code == 422
    assert api.post("/api/hotline/seat/login", json={"extension": "80a1"}).status_code == 422
    assert api.get("/status").json()["components"]["ami"]["status"] == "not configured"
    assert service.recording_file(Path("/tmp"), "../etc/passwd") is None
