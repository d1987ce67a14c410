"""End to end against the real Asterisk 22: SIP phones (pyVoIP) call through the shipped config, the app follows.

A citizen calls 12319 from behind the carrier trunk; a seat phone registered as 8001 rings; the operator's live
stream gets the screen pop before anybody answers; the call record holds times and a recording that exists.
Asterisk restarted mid-call; abandoned calls called back; a message after hours becomes a draft.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotline.pbx import DevPbx
from tests.conftest import REQUIRE_SERVICES, _unavailable
from tests.hotline.conftest import HotlineApp, LiveStream, Operator, reset_pbx, seat_pw

try:
    from tests.hotline.sip_phone import CallState, CitizenPhone, SeatPhone
except ImportError as err:  # pyVoIP comes with the `dev` (or `voip`) extra
    if REQUIRE_SERVICES:
        raise
    pytest.skip(f"pyVoIP unavailable: {err}", allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
SIPP = Path(__file__).parent / "sipp"
# Citizens who only call in use another port of the carrier address than 5062, where the PBX sends calls to the
# carrier: pyVoIP's ACK does not match Asterisk's dialog, so Asterisk resends its 200 OK for 32 s, and those
# strays would confuse the SIPp phone of the 回访 test listening on 5062.
DIAL_IN_PORT = 5064


@pytest.fixture
def clean(pbx: DevPbx, hotline_app: HotlineApp) -> Iterator[None]:
    reset_pbx(pbx)
    yield
    reset_pbx(pbx)


def logged_in_seat(app: HotlineApp, extension: str, *, sip_port: int, rtp_low: int) -> tuple[Operator, SeatPhone]:
    op = app.operator(extension)
    phone = SeatPhone(extension, seat_pw(extension), sip_port=sip_port, rtp_low=rtp_low).start()
    seat = op.post("/api/hotline/seat/login", json={"extension": extension})
    assert seat.status_code == 200, seat.text
    assert seat.json()["logged_in"] and seat.json()["queues"] == ["hotline-12319", "hotline-12345"]
    return op, phone


def find_call(op: Operator, caller_masked: str, *, purpose: str = "hotline", timeout: float = 15,
              ended: bool = True) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for call in op.get("/api/hotline/calls", params={"limit": 50}).json():
            if call["caller_masked"] == caller_masked and call["purpose"] == purpose and (
                    call["ended_at"] or not ended):
                return dict(call)
        time.sleep(0.1)
    raise AssertionError(f"no {purpose} call from {caller_masked}")


def test_call_rings_seat_with_screen_pop_before_answer_and_is_recorded(clean: None, hotline_app: HotlineApp) -> None:
    op, seat = logged_in_seat(hotline_app, "8001", sip_port=5070, rtp_low=30000)
    live = LiveStream(op.client).start()
    citizen = CitizenPhone("13812340001", carrier_port=DIAL_IN_PORT).start()
    try:
        call = citizen.dial("12319")
        ringing = seat.wait_ringing(15)
        # The screen pop is on the operator's stream while the phone still rings (nobody answered yet).
        _, pop = live.wait("call.ringing", lambda d: d["caller_masked"] == "138****0001", timeout=10)
        assert ringing.state == CallState.RINGING
        assert pop["did"] == "12319" and pop["seat"] == "8001" and pop["draft_id"]
        assert "13812340001" not in str(pop) and pop["history"] == {"cases": [], "calls": []}
        seat.answer(ringing)
        live.wait("call.connected", lambda d: d["call_id"] == pop["call_id"])
        time.sleep(2)
        citizen.hangup(call)
        _, ended = live.wait("call.ended", lambda d: d["call_id"] == pop["call_id"])
        assert ended["outcome"] == "answered" and ended["wrapup_seconds"] == 15
    finally:
        citizen.stop()
        seat.stop()
    record = op.call(pop["call_id"])
    assert record["outcome"] == "answered" and record["seat"] == "8001" and record["did"] == "12319"
    assert record["queue"] == "hotline-12319" and record["hangup_cause"] == "Normal Clearing"
    assert record["started_at"] <= record["queued_at"] <= record["ringing_at"] <= record["answered_at"] \
        <= record["ended_at"]
    assert record["talk_seconds"] >= 1.5 and record["wait_seconds"] >= record["ring_seconds"] >= 0.5
    assert record["draft_id"] == pop["draft_id"] and record["has_recording"]
    audio = op.get(f"/api/hotline/calls/{record['id']}/recording")
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF" and len(audio.content) > 16_000
    draft = op.get(f"/api/drafts/{record['draft_id']}").json()
    assert draft["channel"] == "hotline" and draft["reporter_phone_masked"] == "138****0001"


def test_asterisk_restart_mid_call_rebuilds_state_and_keeps_the_record(clean: None, hotline_app: HotlineApp,
                                                                      pbx: DevPbx) -> None:
    op, seat = logged_in_seat(hotline_app, "8002", sip_port=5072, rtp_low=30100)
    live = LiveStream(op.client).start()
    citizen = CitizenPhone("13812340002", carrier_port=DIAL_IN_PORT).start()
    try:
        citizen.dial("12319")
        ringing = seat.wait_ringing(15)
        seat.answer(ringing)
        _, connected = live.wait("call.connected", lambda d: d["caller_masked"] == "138****0002")
        before = hotline_app.wait_status(lambda i: i["live_calls"] == 1, op)
        pbx.restart()
        back = time.time()
        info = hotline_app.wait_status(
            lambda i: i["connected"] and (i["last_resync"] or {}).get("at", 0) > back
            and (i["last_resync"] or {}).get("generation", 0) > before["last_resync"]["generation"], op, timeout=5)
        assert info["last_resync"]["at"] - back <= 5.0
    finally:
        citizen.stop()
        seat.stop()
    record = op.call(connected["call_id"])
    assert record["ended_at"] and record["answered_at"] and record["outcome"] == "answered"
    assert record["seat"] == "8002" and record["talk_seconds"] is not None
    calls = [c for c in op.get("/api/hotline/calls").json() if c["caller_masked"] == "138****0002"]
    assert len(calls) == 1  # one record: not lost, not doubled by the rebuild
    # Seats stay logged in across the PBX restart: Asterisk (persistentmembers) is the source of truth.
    seat_state = op.get("/api/hotline/seat").json()
    assert seat_state["logged_in"] and seat_state["extension"] == "8002"


def test_abandoned_call_is_listed_and_called_back_from_the_seat(clean: None, hotline_app: HotlineApp) -> None:
    op, seat = logged_in_seat(hotline_app, "8003", sip_port=5074, rtp_low=30200)
    paused = op.post("/api/hotline/seat/pause", json={"reason": "小休"})
    assert paused.status_code == 200 and paused.json()["paused"] and paused.json()["reason"] == "小休"
    live = LiveStream(op.client).start()
    citizen = CitizenPhone("13812340003").start()
    try:
        call = citizen.dial("12319")
        time.sleep(2)  # waits in the queue: the only seat is on a break
        citizen.hangup(call)
        live.wait("call.missed", lambda d: d["caller_masked"] == "138****0003")
        missed = [c for c in op.get("/api/hotline/missed").json() if c["caller_masked"] == "138****0003"]
        assert len(missed) == 1 and missed[0]["outcome"] == "abandoned" and not missed[0]["callback_done"]
        assert missed[0]["wait_seconds"] >= 1.5 and missed[0]["answered_at"] is None
        assert op.post("/api/hotline/seat/resume").json()["paused"] is False

        started = op.post(f"/api/hotline/missed/{missed[0]['id']}/callback")
        assert started.status_code == 202, started.text
        assert started.json()["purpose"] == "callback" and started.json()["seat"] == "8003"
        seat_leg = seat.wait_ringing(15)  # the operator's own phone rings first
        seat.answer(seat_leg)
        citizen_leg = citizen.wait_ringing(15)  # then the citizen's phone, through the carrier trunk
        citizen.answer(citizen_leg)
        time.sleep(1.5)
        citizen.hangup(citizen_leg)
        live.wait("call.called_back", lambda d: d["call_id"] == missed[0]["id"])
    finally:
        citizen.stop()
        seat.stop()
    callback = find_call(op, "138****0003", purpose="callback")
    assert callback["outcome"] == "answered" and callback["callback_for_id"] == missed[0]["id"]
    assert callback["seat"] == "8003" and callback["talk_seconds"] >= 1.0 and callback["has_recording"]
    assert op.call(missed[0]["id"])["callback_done"] is True
    assert all(c["caller_masked"] != "138****0003" for c in op.get("/api/hotline/missed").json())


def test_after_hours_message_becomes_a_draft_with_the_recording(clean: None, hotline_app: HotlineApp) -> None:
    op = hotline_app.operator("8004")
    assert op.post("/api/hotline/mode", json={"mode": "closed"}).status_code == 204
    live = LiveStream(op.client).start()
    citizen = CitizenPhone("13812340004", carrier_port=DIAL_IN_PORT).start()
    try:
        call = citizen.dial("12345", speak=True)
        time.sleep(16)  # the after-hours prompt, the beep, then a few seconds of "voice"
        citizen.hangup(call)
        _, voicemail = live.wait("call.voicemail", lambda d: d["caller_masked"] == "138****0004")
    finally:
        citizen.stop()
        op.post("/api/hotline/mode", json={"mode": "open"})
    record = op.call(voicemail["call_id"])
    assert record["outcome"] == "after_hours" and record["voicemail_reason"] == "after_hours"
    assert record["has_message"] and not record["has_recording"] and record["did"] == "12345"
    message = op.get(f"/api/hotline/calls/{record['id']}/message")
    assert message.status_code == 200 and message.content[:4] == b"RIFF" and len(message.content) > 16_000
    draft = op.get(f"/api/drafts/{voicemail['draft_id']}").json()
    assert draft["channel"] == "voicemail" and draft["reporter_phone_masked"] == "138****0004"
    assert draft["media"] == [{"kind": "recording", "url": f"/api/hotline/calls/{record['id']}/message",
                               "mime": "audio/wav"}]
    assert any(c["id"] == record["id"] for c in op.get("/api/hotline/missed").json())


def wait_until_quiet(host: str, port: int, *, quiet: float = 5.0, limit: float = 45.0) -> None:
    """Hold the UDP address until nothing has arrived for `quiet` seconds (SIP retransmissions end after 32 s)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.settimeout(0.2)
    deadline = time.monotonic() + limit
    last = time.monotonic()
    try:
        while time.monotonic() - last < quiet:
            assert time.monotonic() < deadline, f"{host}:{port} never went quiet"
            try:
                sock.recv(65535)
                last = time.monotonic()
            except TimeoutError:
                pass
    finally:
        sock.close()


def closed_case(op: Operator, phone: str) -> str:
    """A hotline report accepted and taken through the departments' steps to 结案."""
    draft = op.post("/api/drafts", json={"channel": "hotline", "text": "小区门口垃圾桶满溢三天无人清运",
                                         "reporter": {"phone": phone}}).json()
    accepted = op.post(f"/api/drafts/{draft['id']}/accept", json={"case_type_code": "01002"})
    assert accepted.status_code == 200, accepted.text
    number = None
    deadline = time.monotonic() + 10
    while not number and time.monotonic() < deadline:
        number = op.get(f"/api/drafts/{draft['id']}").json()["case_number"]
        time.sleep(0.1)
    assert number
    dept = {"Authorization": "Bearer dept-token"}
    for action, body in (("dispatch", {"department": "sanitation"}), ("handle", {}), ("feedback", {"note": "已清运"}),
                         ("verify", {"passed": True})):
        response = op.client.post(f"/api/workflow/cases/{number}/{action}", json=body, headers=dept)
        assert response.status_code == 200, response.text
    return str(number)


def test_survey_after_closure_rates_by_keypad_and_flags_a_bad_rating(clean: None, hotline_app: HotlineApp,
                                                                     tmp_path: Path) -> None:
    if shutil.which("sipp") is None:
        _unavailable("SIPp (Debian sip-tester)", FileNotFoundError("sipp"))
    op = hotline_app.operator("8005")
    live = LiveStream(op.client).start()
    scenario = tmp_path / "citizen.xml"
    scenario.write_text((SIPP / "citizen_keypad.xml").read_text().replace(
        "DIGIT_PCAP", "/usr/share/sip-tester/dtmf_2833_3.pcap"))
    # The citizen's phone (SIPp) waits behind the carrier address for the 回访 call; SIPp aborts on any stray
    # packet of an earlier test's dialog, so wait for the address to go quiet first.
    wait_until_quiet("127.0.0.2", 5062)
    sipp = subprocess.Popen(["sipp", "-sf", str(scenario), "-i", "127.0.0.2", "-p", "5062", "-mi", "127.0.0.2",
                             "-mp", "16000", "-m", "1", "-timeout", "90s", "-nostdin"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    assert sipp.poll() is None, sipp.stderr.read() if sipp.stderr else "sipp exited"
    try:
        number = closed_case(op, "13812340005")
        _, flagged = live.wait("survey.flagged", timeout=60)
        assert flagged["score"] == 1
        assert sipp.wait(timeout=30) == 0, sipp.stderr.read() if sipp.stderr else ""
    finally:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait()
    surveys = op.get("/api/hotline/surveys/flagged").json()
    survey = next(s for s in surveys if s["id"] == flagged["survey_id"])
    assert survey["status"] == "rated" and survey["digit"] == "3" and survey["score"] == 1
    assert survey["phone_masked"] == "138****0005" and survey["attempts"] == 1
    deadline = time.monotonic() + 10
    case = op.get(f"/api/cases/{number}").json()
    while case["rating_score"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
        case = op.get(f"/api/cases/{number}").json()
    assert case["rating_score"] == 1 and case["timeline"][-1]["step_label"] == "评价"
    survey_call = find_call(op, "138****0005", purpose="survey")
    assert survey_call["outcome"] == "answered" and survey_call["direction"] == "out"
    done = op.post(f"/api/hotline/surveys/{survey['id']}/done", json={"note": "已致电市民，安排复查"})
    assert done.status_code == 200 and done.json()["human_callback_done"]
