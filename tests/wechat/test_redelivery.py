"""WeChat redelivers a message up to three times: the effects and replies must be those of one delivery."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import func, select

from core.cases.models import DraftCase
from core.models import OutboxJob
from tests.wechat.conftest import Harness, User
from wechat.models import WeChatMedia


def scenario(user: User) -> list[str | None]:
    """A whole report with every kind of message, plus the commands around it."""
    return [
        user.event("subscribe"),
        user.click("REPORT"),
        user.voice("胜利街和解放路路口的路灯杆被车撞歪了"),
        user.image("a"),
        user.image("b"),
        user.text("完成"),
        user.location(30.601, 114.302, "示例市中心区胜利街与解放路交叉口"),
        user.text("修改"),
        user.text("3"),
        user.text("胜利街与解放路交叉口西南角"),
        user.text("确认"),
        user.text("我的案件"),
        user.here(30.6, 114.3),
        user.text("门前五包是什么"),
        user.event("unsubscribe"),
    ]


def effects(wx: Harness, openid: str) -> dict[str, Any]:
    [draft] = wx.query(select(DraftCase).join(WeChatMedia, WeChatMedia.draft_id == DraftCase.id)
                       .where(WeChatMedia.openid == openid).distinct())
    media = wx.query(select(WeChatMedia).where(WeChatMedia.openid == openid).order_by(WeChatMedia.id))
    jobs = wx.query(select(OutboxJob.kind).where(OutboxJob.payload["media"].as_integer().in_([m.id for m in media])))
    return {"text": draft.raw_text, "address": draft.address, "lat": draft.lat, "media": len(draft.media),
            "kinds": [m.kind for m in media], "media_jobs": sorted(jobs), "number": draft.number}


def test_three_deliveries_equal_one(wx: Harness) -> None:
    once = wx.user("o_once_000000000000000000000", times=1)
    thrice = wx.user("o_thrice_00000000000000000000", times=3)
    replies_once = scenario(once)
    replies_thrice = scenario(thrice)  # every message posted three times; each repeat answered alike
    first, second = effects(wx, once.openid), effects(wx, thrice.openid)
    assert wx.query(select(func.count()).select_from(DraftCase)) == [2]
    number_once, number_thrice = first.pop("number"), second.pop("number")
    assert first == second
    assert first["media"] == 3 and first["media_jobs"] == [("wechat.media")] * 3
    normalised = [r.replace(number_thrice, number_once) if r else r for r in replies_thrice]
    assert normalised == replies_once
    assert sum(1 for r in replies_once if r is None) == 2  # the LOCATION and unsubscribe events


def test_concurrent_redeliveries_create_one_draft(wx: Harness) -> None:
    user = wx.user()
    user.text("上报")
    user.text("垃圾桶满了溢出来一地，好几天没人收")
    user.text("跳过")
    user.text("解放路88号")
    confirm = wx.build("text", openid=user.openid, content="确认")
    with ThreadPoolExecutor(max_workers=3) as pool:
        replies = list(pool.map(lambda _: wx.reply_of(wx.post(confirm)), range(3)))
    assert len(set(replies)) == 1 and "提交成功" in (replies[0] or "")
    assert wx.query(select(func.count()).select_from(DraftCase)) == [1]
    photo = user.image_xml("same")
    user.text("上报")
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda _: wx.post(photo), range(3)))
    assert wx.query(select(func.count()).select_from(WeChatMedia).where(WeChatMedia.openid == user.openid)) == [1]
