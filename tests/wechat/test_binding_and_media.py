"""Phone binding with an SMS code (joining hotline history), media limits, and the 5-second budget."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from core.cases.models import DraftCase
from core.models import Citizen, CitizenContact, ContactKind, OutboxJob
from tests.wechat.conftest import Harness, jpeg, open_harness, wechat_settings
from tests.wechat.helpers import no_full_collection, quick_report
from wechat import assist
from wechat.models import MediaStatus, WeChatMedia
from wechat.storage import DirectoryMediaStorage, InvalidMediaKey, sniff_type


def sms_code(wx: Harness) -> str:
    wx.drain()
    path = wx.api.ctx.settings.sms_outbox_path
    assert path is not None
    last = json.loads(path.read_text(encoding="utf-8").splitlines()[-1])
    match = re.search(r"验证码(\d{6})", last["text"])
    assert match, last
    return match.group(1)


def test_binding_a_phone_joins_the_hotline_history(wx: Harness) -> None:
    hotline = wx.login().post("/api/drafts", json={"channel": "hotline", "text": "来电反映胜利街路灯不亮",
                                               "reporter": {"phone": "13900001111"}})
    assert hotline.status_code == 201, hotline.text
    user = wx.user()
    mine = quick_report(user)
    assert "绑定" in (user.click("BIND") or "")
    assert "格式不正确" in (user.text("12345") or "")
    sent = user.text("139 0000 1111")
    assert sent and "139****1111" in sent
    assert "太频繁" in (user.text("绑定手机 13900001111") or "")
    code = sms_code(wx)
    wrong = "000000" if code != "000000" else "111111"
    assert "还可以再试4次" in (user.text(wrong) or "")
    done = user.text(code)
    assert done and "绑定成功" in done and "139****1111" in done
    listing = user.text("我的案件") or ""
    assert mine.number in listing and hotline.json()["number"] in listing
    [citizen_id] = set(wx.query(select(DraftCase.citizen_id)))
    kinds = sorted(wx.query(select(CitizenContact.kind).where(CitizenContact.citizen_id == citizen_id)))
    assert kinds == ["phone", "wechat"]
    assert wx.query(select(CitizenContact.verified).where(CitizenContact.kind == ContactKind.PHONE)) == [True]
    assert len(wx.query(select(Citizen.id))) == 1  # the openid's own citizen was merged away
    # The code travelled through the outbox as a free-text SMS, never in a log line or a reply.
    assert wx.query(select(OutboxJob.kind).where(OutboxJob.kind == "sms.text")) == ["sms.text"]


def test_too_many_wrong_codes(wx: Harness) -> None:
    user = wx.user()
    user.text("绑定手机 13800138000")
    code = sms_code(wx)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(4):
        user.text(wrong)
    assert "错误次数过多" in (user.text(wrong) or "")
    assert "查询+编号" in (user.text(code) and user.text("帮助") or "")
    assert wx.query(select(CitizenContact).where(CitizenContact.kind == ContactKind.PHONE)) == []


def test_media_size_type_and_expiry_limits(db_url: str, tmp_path: Path, fake_api) -> None:  # type: ignore[no-untyped-def]
    settings = wechat_settings(db_url, tmp_path, fake_api, wechat_media_max_bytes=2000)
    client, wx = open_harness(settings, fake_api)
    try:
        user = wx.user()
        user.text("上报")
        user.text("人行道上的地砖碎了好多块")
        fake_api.add_media("BIG", b"\xff\xd8\xff" + b"0" * 5000)
        fake_api.add_media("HTML", b"<html><script>alert(1)</script></html>", "image/jpeg")
        user.send("image", media_id="BIG")
        user.send("image", media_id="HTML")
        user.send("image", media_id="GONE")  # never uploaded: WeChat says 40007 (expired after 3 days)
        user.send("image", media_id="OK")
        fake_api.add_media("OK", jpeg("ok"))
        wx.drain()
        rows = {r.media_id: r for r in wx.query(select(WeChatMedia))}
        assert rows["BIG"].status == MediaStatus.FAILED and "exceeds" in (rows["BIG"].error or "")
        assert rows["HTML"].status == MediaStatus.FAILED and "not accepted" in (rows["HTML"].error or "")
        assert rows["GONE"].status == MediaStatus.FAILED and "40007" in (rows["GONE"].error or "")
        assert rows["OK"].status == MediaStatus.STORED and rows["OK"].mime == "image/jpeg"
        files = [p for p in Path(settings.media_dir or "").rglob("*") if p.is_file()]
        assert len(files) == 1 and files[0].read_bytes() == jpeg("ok")
        dead = wx.query(select(OutboxJob.status).where(OutboxJob.kind == "wechat.media", OutboxJob.status == "dead"))
        assert len(dead) == 3
    finally:
        client.__exit__(None, None, None)


def test_directory_storage_refuses_escaping_keys(tmp_path: Path) -> None:
    storage = DirectoryMediaStorage(tmp_path / "media")
    for bad in ("../etc/passwd", "/abs/path", "a/../../b", "a//b", ".hidden", ""):
        with pytest.raises(InvalidMediaKey):
            storage.path(bad)

    async def roundtrip() -> bytes:
        await storage.save("wechat/2026/11/1-abc.jpg", b"\xff\xd8\xffdata", mime="image/jpeg")
        data = await storage.read("wechat/2026/11/1-abc.jpg")
        await storage.delete("wechat/2026/11/1-abc.jpg")
        return data

    assert asyncio.run(roundtrip()) == b"\xff\xd8\xffdata"
    assert not (tmp_path / "media/wechat/2026/11/1-abc.jpg").exists()
    assert sniff_type(b"#!AMR\n...") == "audio/amr" and sniff_type(b"<html>") is None


def test_slow_work_is_answered_with_success_and_the_reply_follows(db_url: str, tmp_path: Path, fake_api,  # type: ignore[no-untyped-def]
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    settings = wechat_settings(db_url, tmp_path, fake_api, wechat_reply_budget_seconds=0.3)
    client, wx = open_harness(settings, fake_api)
    original = assist.answer_question

    async def slow(question: str, **kwargs):  # type: ignore[no-untyped-def]
        await asyncio.sleep(1.0)
        return await original(question, **kwargs)

    monkeypatch.setattr(assist, "answer_question", slow)
    try:
        user = wx.user()
        with no_full_collection():
            started = time.monotonic()
            xml = wx.build("text", openid=user.openid, content="门前五包是什么")
            fake_api.user_wrote(user.openid)
            response = wx.post(xml)
            elapsed = time.monotonic() - started
        assert response.text == "success" and elapsed < 0.9
        time.sleep(1.2)  # the turn finishes in the background and queues the reply
        wx.drain()
        [late] = fake_api.state.custom_sent
        assert late["touser"] == user.openid and "门前五包" in late["text"]["content"]
        # A redelivery now answers from the stored reply at once.
        assert "门前五包" in (wx.reply_of(wx.post(xml)) or "")
    finally:
        client.__exit__(None, None, None)
