"""The callback refuses what WeChat would never send, logs it, and keeps serving real messages."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from tests.conftest import Api
from tests.wechat.conftest import (
    ACCOUNT,
    APP_ID,
    OLD_AES_KEY,
    TOKEN,
    Harness,
    open_harness,
    signature,
    wechat_settings,
)


def _error(response) -> str:  # type: ignore[no-untyped-def]
    return str(response.json()["error"]["id"])


def test_url_verification(wx: Harness, caplog: pytest.LogCaptureFixture) -> None:
    ts, nonce = str(int(time.time())), "1234567"
    good = {"signature": signature(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce, "echostr": "8871234567"}
    response = wx.client.get("/wechat", params=good)
    assert response.status_code == 200 and response.text == "8871234567"
    with caplog.at_level(logging.WARNING, logger="wechat.views"):
        forged = wx.client.get("/wechat", params=good | {"signature": "0" * 40})
        stale_ts = str(int(time.time()) - 3600)
        stale = wx.client.get("/wechat", params=good | {"timestamp": stale_ts,
                                                       "signature": signature(TOKEN, stale_ts, nonce)})
    assert forged.status_code == 403 and _error(forged) == "wechat-bad-signature"
    assert stale.status_code == 403 and _error(stale) == "wechat-stale-request"
    assert "wechat-bad-signature" in caplog.text and "wechat-stale-request" in caplog.text
    assert good["signature"] not in caplog.text  # query strings are never logged


def test_hostile_posts_are_refused_logged_and_harmless(wx: Harness, caplog: pytest.LogCaptureFixture) -> None:
    user = wx.user()
    text = wx.build("text", openid=user.openid, content="你好")
    caplog.set_level(logging.WARNING, logger="wechat.views")

    params, body = wx.envelope(text)
    forged = wx.client.post("/wechat", params=params | {"signature": signature("wrong-token", params["timestamp"],
                                                                                params["nonce"])}, content=body)
    assert forged.status_code == 403 and _error(forged) == "wechat-bad-signature"

    # The URL signature is right but the encrypted body was swapped: msg_signature no longer matches.
    other = wx.envelope(wx.build("text", openid=user.openid, content="篡改"))[1]
    swapped = wx.client.post("/wechat", params=params, content=other)
    assert swapped.status_code == 403 and _error(swapped) == "wechat-bad-msg-signature"

    stale = wx.post(text, timestamp=int(time.time()) - 301)
    assert stale.status_code == 403 and _error(stale) == "wechat-stale-request"
    future = wx.post(text, timestamp=int(time.time()) + 3600)
    assert future.status_code == 403 and _error(future) == "wechat-stale-request"

    for fixture in ("xxe", "billion_laughs"):
        attack = wx.post(wx.build(fixture, openid=user.openid), mode="plain")
        assert attack.status_code == 403 and _error(attack) == "wechat-encryption-required"
        sealed = wx.post(wx.build(fixture, openid=user.openid))
        assert sealed.status_code == 400 and _error(sealed) == "wechat-xml-entities", sealed.text

    ts, nonce = str(int(time.time())), "42"
    plain_params = {"signature": signature(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce}
    outer_doctype = wx.client.post("/wechat", params=plain_params | {"encrypt_type": "aes", "msg_signature": "x"},
                                   content=b'<!DOCTYPE x [<!ENTITY a "b">]><xml><Encrypt>&a;</Encrypt></xml>')
    assert outer_doctype.status_code == 400 and _error(outer_doctype) == "wechat-xml-entities"
    malformed = wx.client.post("/wechat", params=plain_params | {"encrypt_type": "aes", "msg_signature": "x"},
                               content=b"<xml><Encrypt>abc")
    assert malformed.status_code == 400 and _error(malformed) == "wechat-bad-message"
    json_body = wx.client.post("/wechat", params=plain_params | {"encrypt_type": "aes", "msg_signature": "x"},
                               content=b'{"ToUserName": "gh"}')
    assert json_body.status_code == 400

    big = wx.client.post("/wechat", params=plain_params, content=b"<xml>" + b"a" * 70_000 + b"</xml>")
    assert big.status_code == 413 and _error(big) == "body-too-large"

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"a" * 4096

    streamed = wx.client.post("/wechat", params=plain_params, content=chunks())
    assert streamed.status_code == 413

    garbage_cipher = wx.client.post(
        "/wechat", params=plain_params | {"encrypt_type": "aes",
                                          "msg_signature": signature(TOKEN, ts, nonce, "bm90LWEtY2lwaGVy")},
        content=b"<xml><ToUserName>gh</ToUserName><Encrypt>bm90LWEtY2lwaGVy</Encrypt></xml>")
    assert garbage_cipher.status_code == 400 and _error(garbage_cipher) == "wechat-decrypt-failed"

    for error_id in ("wechat-bad-signature", "wechat-bad-msg-signature", "wechat-stale-request",
                     "wechat-xml-entities", "body-too-large", "wechat-decrypt-failed"):
        assert error_id in caplog.text
    # The worker is fine: a real message right after is answered.
    assert "您可以回复" in (user.text("帮助") or "")


def test_message_for_another_account_is_refused(wx: Harness) -> None:
    from wechatpy.crypto import WeChatCrypto

    from tests.wechat.conftest import AES_KEY

    user = wx.user()
    wx.crypto = WeChatCrypto(TOKEN, AES_KEY, "wxSomeOtherAppId00")
    response = wx.post(wx.build("text", openid=user.openid, content="你好"))
    assert response.status_code == 400 and response.json()["error"]["id"] == "wechat-wrong-app-id"


def test_unknown_types_and_events_are_ignored_cleanly(wx: Harness, caplog: pytest.LogCaptureFixture) -> None:
    user = wx.user()
    caplog.set_level(logging.INFO, logger="wechat.service")
    assert user.send("unknown_type") is None  # answered "success"
    assert "unknown type 'hologram'" in caplog.text
    assert user.send("unknown_event") is None
    assert user.send("event", event="VIEW", key="https://example.org") is None
    assert user.send("event", event="pic_photo_or_album", key="REPORT_PHOTO") is None
    assert "暂不支持视频" in (user.send("video", media_id="v1") or "")
    # Text that merely mentions an entity declaration is a normal message, not an attack.
    assert user.send("internal_entity") is not None
    assert "请用文字或语音描述" in (user.text("上报") or "")


def test_compatible_mode_and_the_previous_aes_key(db_url: str, tmp_path: Path, fake_api) -> None:  # type: ignore[no-untyped-def]
    settings = wechat_settings(db_url, tmp_path, fake_api, wechat_previous_aes_key=OLD_AES_KEY)
    client, wx = open_harness(settings, fake_api)
    try:
        user = wx.user()
        wx.mode = "compatible"
        assert "您可以回复" in (user.text("帮助") or "")
        # A message still sealed with the key from before the rotation is read, and answered with it.
        from wechatpy.crypto import WeChatCrypto

        wx.crypto = WeChatCrypto(TOKEN, OLD_AES_KEY, APP_ID)
        wx.mode = "safe"
        assert "请用文字或语音描述" in (user.text("上报") or "")
    finally:
        client.__exit__(None, None, None)


def test_plaintext_mode_refuses_a_replayed_nonce_with_another_body(wx_plain: Harness) -> None:
    user = wx_plain.user()
    first = wx_plain.build("text", openid=user.openid, content="帮助")
    params, body = wx_plain.envelope(first)
    ok = wx_plain.client.post("/wechat", params=params, content=body)
    assert ok.status_code == 200 and "您可以回复" in ok.text
    # WeChat retrying the same post is fine (same reply) ...
    again = wx_plain.client.post("/wechat", params=params, content=body)
    assert again.status_code == 200 and again.text.split("<CreateTime>")[0] == ok.text.split("<CreateTime>")[0]
    # ... but the captured URL reused with forged XML is refused.
    forged = wx_plain.build("text", openid=user.openid, content="上报")
    replay = wx_plain.client.post("/wechat", params=params, content=forged.encode())
    assert replay.status_code == 403 and replay.json()["error"]["id"] == "wechat-replayed-nonce"


def test_not_configured_answers_404(api: Api) -> None:
    response = api.client.get("/wechat", params={"echostr": "x"})
    assert response.status_code == 404 and response.json()["error"]["id"] == "wechat-not-configured"
    assert api.client.post("/wechat", content=b"<xml/>").status_code == 404
    status = api.get("/status").json()["components"]["wechat_token"]
    assert status["status"] == "not configured"


def test_status_reports_the_shared_token(wx: Harness) -> None:
    body = wx.api.get("/status").json()
    assert body["components"]["wechat_token"]["status"] == "ok"
    assert "safe mode" in body["components"]["wechat_token"]["detail"]
    assert body["components"]["wechat_media"]["status"] == "ok"
    assert wx.fake.state.stable_calls == 1 and wx.fake.state.token_calls == 0


def test_client_rejects_a_body_without_openid() -> None:
    from wechat.client import BadMessage, CallbackCodec

    codec = CallbackCodec(token=TOKEN, app_id=APP_ID, aes_keys=[], max_skew_seconds=300)
    ts, nonce = str(int(time.time())), "9"
    params = {"signature": signature(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce}
    with pytest.raises(BadMessage):
        codec.open(f"<xml><ToUserName>{ACCOUNT}</ToUserName><MsgType>text</MsgType></xml>".encode(), params)
    with pytest.raises(BadMessage):
        codec.open(b"<xml><MsgType>text</MsgType><MsgType>x</MsgType></xml>", params)
    with pytest.raises(BadMessage):
        codec.open("\udcff".encode("utf-8", "surrogatepass"), params)
