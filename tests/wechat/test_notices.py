"""Notices: template messages with field limits, customer-service fallback in the 48-hour window, SMS
fallback outside it, delivery receipts, and the shared access token."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import select, update

from core.cases.models import Notification
from core.models import CitizenContact, ContactKind, OutboxJob
from tests.wechat.conftest import Harness, User
from tests.wechat.helpers import accept, dept, quick_report
from wechat.models import Conversation
from wechat.notices import fit_field
from wechat.tokens import SharedTokenStore


def add_phone(wx: Harness, user: User, phone: str = "+8613912345678") -> None:
    async def _add() -> None:
        async with wx.api.ctx.uow() as session:
            conv = await session.get(Conversation, user.openid)
            assert conv is not None and conv.citizen_id is not None
            session.add(CitizenContact(citizen_id=conv.citizen_id, kind=ContactKind.PHONE, value=phone))

    wx.run(_add)


def silence(wx: Harness, user: User, hours: float = 49) -> None:
    """The citizen last wrote `hours` ago (as seen by us and by WeChat)."""
    wx.fake.user_wrote(user.openid, ago=hours * 3600)

    async def _age() -> None:
        async with wx.api.ctx.uow() as session:
            await session.execute(update(Conversation).where(Conversation.openid == user.openid).values(
                last_message_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)))

    wx.run(_age)


def notifications(wx: Harness) -> list[Notification]:
    return wx.query(select(Notification).order_by(Notification.id))


def sms_lines(wx: Harness) -> list[dict[str, str]]:
    path = wx.api.ctx.settings.sms_outbox_path
    assert path is not None
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_accepted_notice_is_a_template_message_within_field_limits(wx: Harness) -> None:
    user = wx.user()
    number = accept(wx, quick_report(user))
    wx.drain()
    [sent] = wx.fake.state.template_sent
    assert sent["touser"] == user.openid and sent["template_id"] == "TPL_ACCEPTED"
    assert sent["data"]["character_string1"]["value"] == number
    thing = sent["data"]["thing2"]["value"]
    assert len(thing) <= 20 and thing.startswith("暴露垃圾问题已受理") and thing.endswith("…")
    assert sent["client_msg_id"].startswith("notice-")
    [notice] = notifications(wx)
    assert notice.channel == "wechat" and notice.status == "sent"
    assert notice.provider_message_id == str(sent["msgid"])
    # WeChat reports the delivery with TEMPLATESENDJOBFINISH.
    assert user.send("template_finish", msgid=sent["msgid"], status="success") is None
    assert notifications(wx)[0].status == "delivered"


def test_no_template_uses_the_48_hour_window_then_sms(wx: Harness) -> None:
    user = wx.user()
    number = accept(wx, quick_report(user))
    wx.drain()
    # 派遣 has no template configured: the citizen wrote recently, so a customer-service text goes out.
    dept(wx, number, "dispatch", note="派遣", department="hwc")
    wx.drain()
    [text] = wx.fake.state.custom_sent
    assert text["touser"] == user.openid and number in text["text"]["content"] and "已派至" in text["text"]["content"]
    assert notifications(wx)[-1].status == "sent"

    # Outside the window with a bound phone: the notice falls back to SMS.
    silence(wx, user)
    add_phone(wx, user)
    dept(wx, number, "handle")
    dept(wx, number, "feedback", note="已清理")
    dept(wx, number, "verify", passed=True)
    wx.fake.state.templates.pop("TPL_CLOSED")  # the template was deleted in the console: 40037
    wx.drain()
    wechat_closed, sms_closed = [n for n in notifications(wx) if n.template == "closed"]
    assert wechat_closed.channel == "wechat" and wechat_closed.status == "failed"
    assert "40037" in (wechat_closed.error or "") and "fell back to SMS" in (wechat_closed.error or "")
    assert sms_closed.channel == "sms" and sms_closed.status == "sent" and sms_closed.address == "+8613912345678"
    [line] = [s for s in sms_lines(wx) if number in s["text"]]
    assert line["to"] == "+8613912345678" and "已办结" in line["text"]
    jobs = wx.query(select(OutboxJob.status).where(OutboxJob.kind == "notice.wechat"))
    assert set(jobs) == {"done"}


def test_no_channel_left_fails_for_good(wx: Harness) -> None:
    user = wx.user()
    wx.fake.state.templates.clear()
    draft = quick_report(user)
    silence(wx, user)
    accept(wx, draft)
    [notice] = notifications(wx)
    assert notice.status == "failed" and "48 h" in (notice.error or "")
    [status] = wx.query(select(OutboxJob.status).where(OutboxJob.kind == "notice.wechat"))
    assert status == "dead"


def test_unfollowing_unlinks_and_notices_go_by_sms(wx: Harness) -> None:
    user = wx.user()
    draft = quick_report(user)
    add_phone(wx, user)
    assert user.event("unsubscribe") is None
    contacts = wx.query(select(CitizenContact.kind).where(CitizenContact.citizen_id == draft.citizen_id))
    assert contacts == ["phone"]
    accept(wx, draft)
    wx.drain()
    [notice] = notifications(wx)
    assert notice.channel == "sms" and notice.status == "sent"
    assert wx.fake.state.template_sent == []
    conv = wx.query(select(Conversation).where(Conversation.openid == user.openid))[0]
    assert conv.citizen_id is None and "report" not in conv.data


def test_expired_and_revoked_tokens_are_replaced(wx: Harness) -> None:
    user = wx.user()
    draft = quick_report(user)
    assert wx.api.get("/status").json()["components"]["wechat_token"]["status"] == "ok"  # token fetched
    wx.fake.expire_tokens()  # as if two hours passed: 42001, then a fresh stable token
    number = accept(wx, draft)
    assert len(wx.fake.state.template_sent) == 1
    assert wx.fake.state.stable_calls == 2 and wx.fake.state.token_calls == 0 and wx.fake.state.last_forced == 0

    # WeChat refuses the token although stable_token still hands it out: only a forced refresh helps.
    revoked = wx.fake.state.stable
    assert revoked is not None
    wx.fake.revoke(revoked)
    dept(wx, number, "dispatch", department="hwc")
    wx.drain()
    assert len(wx.fake.state.custom_sent) == 1
    assert wx.fake.state.last_forced > 0 and wx.fake.state.stable != revoked


def test_token_is_shared_between_processes(wx: Harness) -> None:
    calls: list[bool] = []

    async def fetch(*, force: bool = False) -> tuple[str, int]:
        calls.append(force)
        return f"token-{len(calls)}", 7200

    async def two_stores() -> tuple[str, str]:
        sessions = wx.api.ctx.sessions
        first = SharedTokenStore(sessions=sessions, app_id="wx-shared", fetch=fetch)
        second = SharedTokenStore(sessions=sessions, app_id="wx-shared", fetch=fetch)
        return await first.get(), await second.get()

    assert wx.run(two_stores) == ("token-1", "token-1")
    assert calls == [False]


def test_field_limits() -> None:
    assert fit_field("thing2", "一二三四五六七八九十一二三四五六七八九十一") == "一二三四五六七八九十一二三四五六七八九…"
    assert fit_field("character_string1", "P000001号") == "P000001"
    assert fit_field("phrase3", "已经办结了吗") == "已经办结了"
    assert fit_field("thing4", "") == "-"
