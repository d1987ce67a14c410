"""Through a real Kannel (Debian's bearerbox + smsbox, fakesmsc as the SMSC) and the app served over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from core.cases.models import Notification
from sms.kannel_box import KannelBox, free_port, reassemble_ucs2, smpp_upstream
from sms.models import SmsReceipt, SmsSend, SmsStatus
from tests.fakes.smsc import FakeSmsc
from tests.sms.conftest import CALLBACK_TOKEN, sms_settings
from tests.sms.live import LiveApp, wait_until
from tests.sms.proxy import LossyRelay

pytestmark = pytest.mark.kannel
DEPT = {"Authorization": "Bearer dept-token"}
CITIZEN = "8613812345678"


class Rig:
    """The live app, its Kannel, and a relay between them that can lose Kannel's answers."""

    def __init__(self, db_url: str, tmp_path: Path, *, via_relay: bool = True, **overrides: Any) -> None:
        app_port = free_port()
        self.box = KannelBox(workdir=tmp_path / "kannel",
                             incoming_url=f"http://127.0.0.1:{app_port}/sms/kannel/incoming/{CALLBACK_TOKEN}")
        self.relay = LossyRelay(self.box.sendsms_port).start()
        port = self.relay.port if via_relay else self.box.sendsms_port
        values: dict[str, Any] = {
            "sms_provider": "kannel", "sms_kannel_url": f"http://127.0.0.1:{port}/cgi-bin/sendsms",
            "sms_kannel_username": self.box.username, "sms_kannel_password": self.box.password,
            "sms_public_base_url": f"http://127.0.0.1:{app_port}", "sms_quiet_hours_enabled": False,
            "outbox_worker": True, "outbox_poll_seconds": 0.1, "sms_timeout_seconds": 2.0,
            "outbox_lease_seconds": 4.0,
        }
        values.update(overrides)
        self.app = LiveApp(sms_settings(db_url, tmp_path, **values), app_port).start()

    def messages(self) -> list[tuple[str, str, int]]:
        """(receiver, text, parts) of everything the fake SMSC received."""
        return reassemble_ucs2(self.box.received())

    def texts(self) -> list[str]:
        return [text for _, text, _ in self.messages()]

    def rows(self, stmt: Any) -> list[Any]:
        async def _q() -> list[Any]:
            async with self.app.ctx.sessions() as session:
                return list(await session.scalars(stmt))

        return list(self.app.run(_q))

    def queue(self, key: str, text: str, to: str = "+8613812345678") -> None:
        async def _queue() -> None:
            async with self.app.ctx.uow() as session:
                await self.app.ctx.sms.queue_text(session=session, to=to, key=key, text=text)

        self.app.run(_queue)

    def send_status(self, key: str) -> SmsStatus:
        return SmsStatus(self.rows(select(SmsSend.status).where(SmsSend.key == key))[0])

    def stop(self) -> None:
        self.box.cleanup()
        self.app.stop()
        self.relay.stop()


@pytest.fixture
def rig(kannel: None, db_url: str, tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(db_url, tmp_path)
    rig.box.start()
    yield rig
    rig.stop()


@pytest.fixture
def cold_rig(kannel: None, db_url: str, tmp_path: Path) -> Iterator[Rig]:
    """The app with its Kannel not started yet (the gateway is down), talking to smsbox directly."""
    rig = Rig(db_url, tmp_path, via_relay=False)
    yield rig
    rig.stop()


def file_case(rig: Rig, phone: str = "138 1234 5678") -> str:
    app = rig.app
    draft = app.post("/api/drafts", json={
        "channel": "hotline", "text": "人民路与解放路交叉口东北角一污水井盖破损，存在安全隐患。",
        "location": {"address": "人民路与解放路交叉口", "district": "中心区"},
        "reporter": {"name": "王先生", "phone": phone}}).json()
    assert app.post(f"/api/drafts/{draft['id']}/accept", json={"case_type_code": "01002"}).status_code == 200
    wait_until(lambda: app.get(f"/api/drafts/{draft['id']}").json()["case_number"], what="case number")
    return str(app.get(f"/api/drafts/{draft['id']}").json()["case_number"])


def close(rig: Rig, number: str) -> None:
    for action, body in (("dispatch", {"department": "drainage"}), ("handle", {}), ("feedback", {"note": "已处理"}),
                         ("verify", {"passed": True})):
        response = rig.app.http.post(f"/api/workflow/cases/{number}/{action}", json=body, headers=DEPT)
        assert response.status_code == 200, response.text


def test_notice_delivered_receipt_recorded_and_reply_rates_the_case(rig: Rig) -> None:
    number = file_case(rig)
    other = file_case(rig, phone="139 0000 1111")
    wait_until(lambda: sum(number in t or other in t for t in rig.texts()) == 2, what="受理 notices at the SMSC")
    accepted = next(m for m in rig.messages() if number in m[1])
    assert accepted[0] == CITIZEN and accepted[1].startswith("【示例城管】")
    # fakesmsc acknowledges with a final DLR: Kannel calls our dlr-url, the notice becomes delivered.
    wait_until(lambda: [n.status for n in rig.rows(select(Notification))] == ["delivered", "delivered"],
               what="delivery reports")
    first = rig.rows(select(Notification).order_by(Notification.id))[0]
    assert first.provider_message_id == "notice-1" and first.delivered_at is not None
    assert {r.outcome for r in rig.rows(select(SmsReceipt))} >= {"accepted", "delivered"}

    close(rig, number)
    close(rig, other)
    wait_until(lambda: sum("请回复数字评价" in t for t in rig.texts()) == 2, what="the 回访 surveys")
    rig.box.send_mo(CITIZEN, "1")
    wait_until(lambda: rig.app.get(f"/api/cases/{number}").json()["rating_score"] == 5, what="the rating")
    assert rig.app.get(f"/api/cases/{other}").json()["rating_score"] is None
    wait_until(lambda: any("感谢您对案件" in t and number in t for t in rig.texts()), what="the thank-you")


def test_long_notice_is_concatenated_by_kannel(rig: Rig) -> None:
    text = "您反映的问题已转交相关部门，" * 8
    rig.queue("long-1", text)
    wait_until(lambda: rig.texts() == [f"【示例城管】{text}"], what="the long SMS")
    [(_, _, parts)] = rig.messages()
    assert parts == 2
    wait_until(lambda: rig.send_status("long-1") == SmsStatus.DELIVERED, what="its delivery report")


def test_gateway_down_for_a_while_nothing_lost_nothing_twice(cold_rig: Rig) -> None:
    rig = cold_rig
    for i in range(5):
        rig.queue(f"down-{i}", f"网关故障期间的第{i}条通知")
    # SMS to one number keep their order: the first is retried, the others wait behind it.
    wait_until(lambda: any(s.attempts >= 2 for s in rig.rows(select(SmsSend))), what="failed attempts")
    # The worker may be mid-attempt: every send is waiting or being tried, none was accepted.
    assert all(s.status in (SmsStatus.PENDING, SmsStatus.SUBMITTING) and s.accepted_at is None
               for s in rig.rows(select(SmsSend)))
    assert any("unreachable" in (s.error or "") for s in rig.rows(select(SmsSend)))
    rig.box.start()
    wait_until(lambda: len(rig.texts()) == 5, what="the backlog at the SMSC")
    wait_until(lambda: all(s.status == SmsStatus.DELIVERED for s in rig.rows(select(SmsSend))), what="receipts")
    assert rig.texts() == [f"【示例城管】网关故障期间的第{i}条通知" for i in range(5)]


def test_smsc_link_down_messages_wait_in_kannel(rig: Rig) -> None:
    rig.box.stop_smsc()
    rig.queue("queued-1", "短信中心断线时的通知")
    wait_until(lambda: rig.send_status("queued-1") == SmsStatus.SUBMITTED, what="Kannel queued it")
    status = rig.app.get("/status").json()["components"]["sms_gateway"]
    assert status["status"] == "fail" and "SMSC link down" in status["detail"]
    rig.box.start_smsc()
    wait_until(lambda: rig.send_status("queued-1") == SmsStatus.DELIVERED, what="delivery after the link is back")
    wait_until(lambda: rig.texts() == ["【示例城管】短信中心断线时的通知"], what="the SMS at the SMSC")
    assert rig.app.get("/status").json()["components"]["sms_gateway"] == {"status": "ok", "detail": "kannel"}


def test_lost_answer_is_settled_by_the_receipt_not_sent_twice(rig: Rig) -> None:
    rig.relay.swallow = True
    rig.queue("lost-1", "网关回应丢失时的通知")
    wait_until(lambda: rig.relay.swallowed >= 1, what="the swallowed answer")
    rig.relay.swallow = False
    wait_until(lambda: rig.send_status("lost-1") == SmsStatus.DELIVERED, what="the receipt")
    # Past the in-flight window the send is looked at again: it is settled, nothing is resent.
    in_flight = rig.app.ctx.sms.in_flight_seconds
    import time

    time.sleep(in_flight + 1.5)
    assert rig.texts() == ["【示例城管】网关回应丢失时的通知"]
    [send] = rig.rows(select(SmsSend))
    assert send.attempts == 1 and rig.relay.swallowed == 1


def test_kannel_over_smpp_with_the_generated_production_config(kannel: None, db_url: str, tmp_path: Path) -> None:
    """The `intake sms kannel-config --smsc-host …` SMPP group, against the in-tree SMSC."""
    smsc = FakeSmsc(system_id="carrier-user", password="carr-pw").start()
    smsc.state.receipt_id_style = "decimal"  # what msg-id-type 1 expects
    rig = Rig(db_url, tmp_path)
    rig.box.upstream = smpp_upstream(host="127.0.0.1", port=smsc.port, username="carrier-user",
                                     password="carr-pw")
    try:
        rig.box.start()
        wait_until(lambda: smsc.state.binds == 1, what="Kannel's bind")
        text = ("您反映的井盖破损问题已派至市政设施管理处处理，处置人员将于今天下午到达人民路与解放路交叉口现场，"
                "施工期间请绕行并注意安全，如有疑问请拨打12319城市管理热线，谢谢。")
        assert len(text) > 70
        rig.queue("smpp-1", text)
        wait_until(lambda: len(smsc.state.messages()) == 1, what="the message at the SMSC")
        [(destination, received, parts)] = smsc.state.messages()
        assert destination == CITIZEN and received == f"【示例城管】{text}" and len(parts) == 2
        assert all(p.data_coding == 8 and p.esm_class & 0x40 for p in parts)
        assert any(p.registered_delivery & 1 for p in parts)  # Kannel asks one receipt for the whole message
        wait_until(lambda: rig.send_status("smpp-1") == SmsStatus.DELIVERED, what="the receipts through Kannel")
    finally:
        rig.stop()
        smsc.stop()
