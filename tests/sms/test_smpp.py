"""SMPP through smpplib against an in-tree SMSC: UCS-2 concatenation, receipts, replies, enquire_link, reconnects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from sqlalchemy import select

from core.cases.models import Notification, Rating
from sms.client import Inbound, Receipt, SmsMessage, SmsNotSent, SmsOutcomeUnknown, SmsRejected, SmsThrottled
from sms.models import SmsPart, SmsStatus
from sms.providers.smpp import SmppSender
from tests.conftest import Api
from tests.fakes.smsc import FakeSmsc
from tests.sms.helpers import PHONE, accepted_case, close_case, drain_all, one, rows, sends

# 120 Chinese characters with the signature: two UCS-2 parts (67 + 53 characters).
NOTICE_120 = ("【示例城管】案件2611220001234已派至市政设施管理处处理。处置人员将于今天下午到达人民路与解放路交叉口"
              "东北角现场更换破损井盖，施工期间请您绕行并注意安全。如有疑问请拨打12319城市管理热线咨询，感谢您对城市管理"
              "工作的支持与监督。")


class Sink:
    """Collects what the SMPP connection hands over."""

    def __init__(self) -> None:
        self.receipts: list[Receipt] = []
        self.inbound_messages: list[Inbound] = []
        self.fail = False

    async def receipt(self, receipt: Receipt) -> None:
        if self.fail:
            raise RuntimeError("database down")
        self.receipts.append(receipt)

    async def inbound(self, message: Inbound) -> None:
        if self.fail:
            raise RuntimeError("database down")
        self.inbound_messages.append(message)


@pytest.fixture
def smsc() -> Iterator[FakeSmsc]:
    fake = FakeSmsc().start()
    yield fake
    fake.stop()


@pytest.fixture
async def smpp(smsc: FakeSmsc) -> AsyncIterator[tuple[SmppSender, Sink]]:
    sender = SmppSender(host="127.0.0.1", port=smsc.port, system_id="intake", password="smpp-pw",
                        source_addr="10690000", timeout=2.0, enquire_link_seconds=0.3, reconnect_max_seconds=0.5)
    sink = Sink()
    sender.start(sink, asyncio.get_running_loop())
    assert await asyncio.to_thread(sender.wait_bound, 5)
    yield sender, sink
    await sender.close()


async def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def message(text: str, key: str = "k1", to: str = PHONE) -> SmsMessage:
    return SmsMessage(to=to, text=text, template="text", params={}, idempotency_key=key)


async def test_120_character_notice_is_concatenated_ucs2(smpp: tuple[SmppSender, Sink], smsc: FakeSmsc) -> None:
    sender, sink = smpp
    assert len(NOTICE_120) == 120
    result = await sender.send(message(NOTICE_120))
    [(destination, text, parts)] = smsc.state.messages()
    assert destination == "8613812345678" and text == NOTICE_120
    assert len(parts) == 2 and result.parts == 2
    assert result.part_ids == tuple(p.message_id for p in parts) and result.provider_message_id == parts[0].message_id
    first, second = parts
    for seq, part in enumerate(parts, start=1):
        assert part.data_coding == 0x08 and part.esm_class & 0x40 and part.registered_delivery == 1
        assert part.dest_ton == 1 and part.dest_npi == 1 and part.source == "10690000"
        assert part.udh[:3] == b"\x05\x00\x03" and part.udh[4:] == bytes([2, seq])
    assert first.udh[3] == second.udh[3]  # one reference number for the whole message
    assert len(first.payload) == 134 and len(second.payload) == (120 - 67) * 2
    # One receipt per part, each with its own id.
    await wait_for(lambda: len(sink.receipts) == 2)
    assert {r.provider_message_id for r in sink.receipts} == set(result.part_ids)
    assert all(r.delivered is True and r.code == "DELIVRD" for r in sink.receipts)


async def test_short_text_is_one_ucs2_part(smpp: tuple[SmppSender, Sink], smsc: FakeSmsc) -> None:
    sender, _ = smpp
    result = await sender.send(message("【示例城管】案件2611220001234已办结。"))
    [(_, _, [part])] = smsc.state.messages()
    assert result.parts == 1 and part.esm_class == 0 and part.data_coding == 0x08 and part.udh == b""


async def test_receipts_with_decimal_ids_and_tlvs(smpp: tuple[SmppSender, Sink], smsc: FakeSmsc) -> None:
    sender, sink = smpp
    smsc.state.receipt_id_style = "decimal"
    smsc.state.receipt_with_tlv = True
    result = await sender.send(message("【示例城管】测试回执"))
    await wait_for(lambda: len(sink.receipts) == 1)
    receipt = sink.receipts[0]
    assert receipt.provider_message_id == str(int(result.provider_message_id, 16))
    assert result.provider_message_id in receipt.aliases


async def test_enquire_link_keeps_the_bind_alive(smpp: tuple[SmppSender, Sink], smsc: FakeSmsc) -> None:
    await wait_for(lambda: smsc.state.enquire_links >= 2, seconds=3)
    assert await smpp[0].check()


async def test_reconnects_after_the_smsc_drops_the_link(smpp: tuple[SmppSender, Sink], smsc: FakeSmsc) -> None:
    sender, _ = smpp
    smsc.drop_connections()
    await wait_for(lambda: smsc.state.binds >= 2)
    await wait_for(lambda: sender._bound.is_set())  # noqa: SLF001
    await sender.send(message("【示例城管】重连后发送"))
    assert [text for _, text, _ in smsc.state.messages()] == ["【示例城管】重连后发送"]


async def test_not_bound_is_not_sent(smsc: FakeSmsc) -> None:
    smsc.state.refuse_binds = True
    sender = SmppSender(host="127.0.0.1", port=smsc.port, system_id="intake", password="smpp-pw", timeout=1.0,
                        reconnect_max_seconds=0.2)
    sender.start(Sink(), asyncio.get_running_loop())
    try:
        await wait_for(lambda: smsc.state.bind_failures >= 1)
        with pytest.raises(SmsNotSent):
            await sender.send(message("x"))
        assert not await sender.check()
        smsc.state.refuse_binds = False
        assert await asyncio.to_thread(sender.wait_bound, 5)
    finally:
        await sender.close()


async def test_submit_errors_are_classified(smpp: tuple[SmppSender, Sink], smsc: FakeSmsc) -> None:
    sender, _ = smpp
    smsc.state.reject_destinations.add("8613900001111")
    with pytest.raises(SmsRejected):
        await sender.send(message("x", to="+8613900001111"))
    smsc.state.throttle_next = 1
    with pytest.raises(SmsThrottled):
        await sender.send(message("y"))
    smsc.state.silent_submits = True
    with pytest.raises(SmsOutcomeUnknown):
        await sender.send(message("z"))


async def test_replies_and_concatenated_replies(smpp: tuple[SmppSender, Sink], smsc: FakeSmsc) -> None:
    _, sink = smpp
    assert await asyncio.to_thread(smsc.send_mo, "8613812345678", "满意") == 0
    long_text = "人民路与解放路交叉口东北角的污水井盖又松动了，车辆经过时声音很大，晚上影响休息，已经持续一周了，" \
                "附近还有一个雨水箅子也坏了，下雨天积水很深，老人小孩走路很危险，请尽快派人来看看，谢谢！"
    assert len(long_text) > 70
    assert await asyncio.to_thread(smsc.send_mo, "8613812345678", long_text) == 0
    assert [(m.sender, m.text) for m in sink.inbound_messages] == [("8613812345678", "满意"),
                                                                   ("8613812345678", long_text)]


async def test_failed_recording_makes_the_smsc_deliver_again(smpp: tuple[SmppSender, Sink], smsc: FakeSmsc) -> None:
    _, sink = smpp
    sink.fail = True

    async def recover() -> None:
        await wait_for(lambda: any(status != 0 for what, status in smsc.state.deliver_resps if what == "mo"))
        sink.fail = False

    recovering = asyncio.create_task(recover())
    assert await asyncio.to_thread(smsc.send_mo, "8613812345678", "1") == 0
    await recovering
    assert [m.text for m in sink.inbound_messages] == ["1"]
    assert [status for what, status in smsc.state.deliver_resps if what == "mo"][0] == 0x64


def smpp_api(make_api: Callable[..., Api], smsc: FakeSmsc, **overrides: object) -> Api:
    api = make_api(sms_provider="smpp", sms_smpp_host="127.0.0.1", sms_smpp_port=smsc.port,
                   sms_smpp_system_id="intake", sms_smpp_password="smpp-pw", sms_smpp_source_addr="10690000",
                   sms_quiet_hours_enabled=False, sms_timeout_seconds=2.0, **overrides)
    assert api.ctx.sms.sender.wait_bound(5)
    return api


def test_notice_through_smpp_is_delivered_and_a_reply_rates(make_api: Callable[..., Api], smsc: FakeSmsc) -> None:
    api = smpp_api(make_api, smsc)
    smsc.state.receipt_id_style = "decimal"
    number = accepted_case(api)
    [(destination, text, parts)] = smsc.state.messages()
    assert destination == "8613812345678" and text.startswith("【示例城管】") and number in text
    deadline = time.monotonic() + 5
    while one(api, select(Notification)).status != "delivered" and time.monotonic() < deadline:
        time.sleep(0.05)
    notification = one(api, select(Notification))
    assert notification.status == "delivered" and notification.provider_message_id == parts[0].message_id
    assert [p.status for p in rows(api, select(SmsPart))] == [SmsStatus.DELIVERED]
    close_case(api, number)
    assert smsc.send_mo("8613812345678", "1") == 0
    drain_all(api)
    assert one(api, select(Rating)).score == 5


def test_link_down_keeps_notices_until_it_is_back(make_api: Callable[..., Api], smsc: FakeSmsc) -> None:
    # A slow retry, so that filing the case does not spin on the failing notice.
    api = smpp_api(make_api, smsc, outbox_backoff_base_seconds=5.0, outbox_backoff_max_seconds=10.0)
    smsc.state.refuse_binds = True
    smsc.drop_connections()
    deadline = time.monotonic() + 5
    while api.ctx.sms.sender._bound.is_set() and time.monotonic() < deadline:  # noqa: SLF001
        time.sleep(0.02)
    draft_case_number = accepted_case(api)
    api.step()
    assert sends(api)[0].status == SmsStatus.PENDING and smsc.state.messages() == []
    smsc.state.refuse_binds = False
    assert api.ctx.sms.sender.wait_bound(10)
    drain_all(api)
    [(_, text, _)] = smsc.state.messages()
    assert draft_case_number in text
