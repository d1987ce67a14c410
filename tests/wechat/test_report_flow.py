"""我要上报 end to end: signed, AES-encrypted posts against the real app, to a draft with photos on disk."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import select

from core.cases.models import DraftCase
from tests.wechat.conftest import Harness, jpeg
from wechat.assist import Suggestion
from wechat.models import Conversation, ConversationStep, MediaStatus, WeChatMedia


def drafts(wx: Harness) -> list[DraftCase]:
    return wx.query(select(DraftCase).order_by(DraftCase.id))


def conversation(wx: Harness, openid: str) -> Conversation:
    rows = wx.query(select(Conversation).where(Conversation.openid == openid))
    assert len(rows) == 1
    return rows[0]


def test_whole_flow_to_a_draft_with_photos_on_disk_and_a_location(wx: Harness, tmp_path: Path) -> None:
    user = wx.user()
    assert "感谢关注" in (user.event("subscribe") or "")
    assert "请用文字或语音描述" in (user.click("REPORT") or "")
    reply = user.text("人民路与解放路交叉口东北角有个污水井盖破了，晚上很危险")
    assert "请发送现场照片" in (reply or "")

    # Choosing 9 photos in the WeChat client sends 9 posts at once.
    xmls = [user.image_xml(f"p{i}") for i in range(9)]
    with ThreadPoolExecutor(max_workers=9) as pool:
        replies = list(pool.map(lambda xml: wx.reply_of(wx.post(xml)), xmls))
    numbers = sorted(int(r.split("第")[1].split("张")[0]) for r in replies if r)
    assert numbers == list(range(1, 10)), replies
    assert sum("请发送问题所在位置" in (r or "") for r in replies) == 1  # the 9th photo moves on
    assert conversation(wx, user.openid).step == ConversationStep.LOCATION

    summary = user.location(30.5928, 114.3055, "示例市中心区人民路与解放路交叉口")
    assert summary is not None
    assert "请核对" in summary and "照片：9张" in summary and "人民路与解放路交叉口" in summary
    assert "污水井盖" in summary

    done = user.text("确认")
    assert done is not None and "提交成功" in done
    [draft] = drafts(wx)
    assert draft.number in done
    assert draft.channel == "wechat" and draft.status == "pending_review"
    assert draft.lat == 30.5928 and draft.lng == 114.3055
    assert draft.address == "示例市中心区人民路与解放路交叉口"
    assert draft.raw_text.startswith("人民路与解放路交叉口东北角")
    assert len(draft.media) == 9 and all(m["url"].startswith("/wechat/media/") for m in draft.media)
    assert draft.source_key and draft.source_key.startswith("wechat:")
    assert draft.citizen_id is not None

    wx.drain()
    media = wx.query(select(WeChatMedia).where(WeChatMedia.draft_id == draft.id))
    assert len(media) == 9 and all(m.status == MediaStatus.STORED for m in media)
    media_dir = wx.api.ctx.settings.media_dir
    assert media_dir is not None
    stored = {(media_dir / m.storage_key).read_bytes() for m in media}
    assert stored == set(user.photos)
    # The seat console shows them through the authenticated media endpoint.
    wx.login()
    first = wx.client.get(draft.media[0]["url"])
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert first.content in set(user.photos)
    assert wx.client.get("/wechat/media/999999").status_code == 404
    assert conversation(wx, user.openid).step == ConversationStep.IDLE


def test_media_endpoint_needs_a_login(wx: Harness) -> None:
    assert wx.client.get("/wechat/media/1").status_code == 401


def test_voice_description_typed_address_and_suggestion(wx: Harness) -> None:
    async def fake_classifier(text: str) -> Suggestion | None:
        assert "垃圾" in text
        return Suggestion(code="06010", name="暴露垃圾", score=0.91, department=None)

    wx.api.ctx.wechat.suggester = fake_classifier  # type: ignore[union-attr]
    user = wx.user()
    user.text("上报")
    reply = user.voice("解放路菜市场门口垃圾堆了好几天了，臭得很")
    assert reply and "请发送现场照片" in reply
    assert "请发送问题所在位置" in (user.text("跳过") or "")
    wx.drain()  # the suggestion is computed in the background
    summary = user.text("解放路菜市场东门")
    assert summary is not None and "暴露垃圾" in summary and "系统建议" in summary
    user.text("1")
    [draft] = drafts(wx)
    assert draft.suggested_type_code == "06010" and draft.suggestion_confidence == 0.91
    assert draft.address == "解放路菜市场东门"
    assert [m["kind"] for m in draft.media] == ["voice"]
    wx.drain()
    [voice] = wx.query(select(WeChatMedia).where(WeChatMedia.draft_id == draft.id))
    assert voice.kind == "voice" and voice.mime == "audio/amr" and voice.status == MediaStatus.STORED


def test_no_classifier_means_no_suggestion(wx: Harness) -> None:
    wx.api.ctx.wechat.suggester = None  # type: ignore[union-attr]
    user = wx.user()
    user.text("我要上报")
    user.text("小区门口的路灯不亮了，晚上黑漆漆的")
    user.text("完成")
    summary = user.text("阳光小区3栋楼下")
    assert summary is not None and "提交后由受理员确认" in summary


def test_cancel_at_every_step_and_out_of_order(wx: Harness) -> None:
    user = wx.user()
    for steps in ([], ["路边垃圾桶倒了没人扶"], ["路边垃圾桶倒了没人扶", "完成"],
                  ["路边垃圾桶倒了没人扶", "完成", "解放路88号门口"]):
        user.text("上报")
        for text in steps:
            user.text(text)
        assert user.text("取消") == "已取消本次上报。需要时回复“上报”重新开始。"
        assert conversation(wx, user.openid).step == ConversationStep.IDLE
    assert user.text("取消") == "当前没有进行中的操作。回复“帮助”查看可用功能。"
    # A photo before anything else starts a report that already has the photo.
    assert "已为您开始上报" in (user.image("first") or "")
    assert "已收到第2张照片" in (user.text("下水道堵了污水漫到路上") and user.image("second") or "")
    # A location while photos are expected ends the photos and goes straight to the summary.
    summary = user.location(30.6, 114.3, "示例市中心区胜利街")
    assert summary and "照片：2张" in summary and "胜利街" in summary
    assert drafts(wx) == []


def test_edit_before_confirming(wx: Harness) -> None:
    user = wx.user()
    user.text("上报")
    user.text("人行道上有人乱摆摊卖水果")
    user.text("完成")
    user.text("解放路88号")
    assert "1 问题描述" in (user.text("修改") or "")
    assert "请发送问题所在位置" in (user.text("3") or "")
    summary = user.text("胜利街12号门口")
    assert summary and "胜利街12号门口" in summary and "解放路88号" not in summary
    user.text("修改")
    user.text("1")
    summary = user.text("人行道上有人乱摆摊卖水果，堵住了盲道")
    assert summary and "堵住了盲道" in summary
    user.text("确认")
    [draft] = drafts(wx)
    assert draft.address == "胜利街12号门口" and "盲道" in draft.raw_text


def test_timeout_drops_the_unfinished_report_kindly(wx: Harness) -> None:
    user = wx.user()
    user.text("上报")
    user.text("马路上有个大坑，车开过去很颠")

    async def expire() -> None:
        import datetime as dt

        from sqlalchemy import update

        async with wx.api.ctx.uow() as session:
            await session.execute(update(Conversation).values(
                step_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)))

    wx.run(expire)
    reply = user.text("完成")
    assert reply and "超过30分钟未完成，已自动取消" in reply
    assert conversation(wx, user.openid).step == ConversationStep.IDLE


def test_tenth_photo_is_refused_and_short_descriptions_asked_again(wx: Harness) -> None:
    user = wx.user()
    user.text("上报")
    assert "至少5个字" in (user.text("井盖") or "")
    user.text("井盖没了，一个大洞")
    for i in range(9):
        user.image(f"x{i}")
    reply = user.image("x9")
    assert reply and "最多9张照片，这张没有保存" in reply
    assert len(conversation(wx, user.openid).data["report"]["photos"]) == 9


def test_conversation_survives_a_restart(wx_settings, fake_api) -> None:  # type: ignore[no-untyped-def]
    from tests.wechat.conftest import open_harness

    client, first = open_harness(wx_settings, fake_api)
    user = first.user()
    user.text("上报")
    user.text("公园里的树倒了压在路上")
    client.__exit__(None, None, None)

    client, second = open_harness(wx_settings, fake_api)
    try:
        again = second.user(user.openid)
        assert "请发送问题所在位置" in (again.text("跳过") or "")
        summary = again.text("人民公园北门")
        assert summary and "公园里的树倒了" in summary
    finally:
        client.__exit__(None, None, None)


def test_two_processes_share_one_conversation(wx_settings, fake_api) -> None:  # type: ignore[no-untyped-def]
    from tests.wechat.conftest import open_harness

    client_a, a = open_harness(wx_settings, fake_api)
    client_b, b = open_harness(wx_settings, fake_api)
    try:
        user_a = a.user()
        user_b = b.user(user_a.openid)
        user_a.text("上报")
        user_b.text("桥下面有人烧垃圾，烟很大")
        xmls = [user_a.image_xml(f"m{i}") for i in range(8)]
        harnesses = [a, b] * 4
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda pair: pair[0].reply_of(pair[0].post(pair[1])), zip(harnesses, xmls, strict=True)))
        state = conversation(a, user_a.openid)
        assert len(state.data["report"]["photos"]) == 8
        assert state.step == ConversationStep.PHOTOS
        assert jpeg("MEDIA_m0") in user_a.photos
    finally:
        client_b.__exit__(None, None, None)
        client_a.__exit__(None, None, None)


def test_housekeeping_forgets_old_replies_and_abandoned_reports(wx: Harness) -> None:
    import datetime as dt

    from wechat import service

    user = wx.user()
    user.text("上报")
    user.text("河边护栏断了一截，小孩子很危险")
    assert conversation(wx, user.openid).recent

    async def later() -> None:
        bot = wx.api.ctx.wechat
        assert bot is not None
        await service.prune(bot=bot, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))

    wx.run(later)
    state = conversation(wx, user.openid)
    assert state.recent == [] and state.step == ConversationStep.IDLE and "report" not in state.data
    assert "请用文字或语音描述" in (user.text("上报") or "")
