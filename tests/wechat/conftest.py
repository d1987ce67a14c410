"""WeChat test harness: the real app, signed (and AES-encrypted) XML posts built from fixtures, and the
fake WeChat API server for everything the bot calls out to."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import secrets
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import xmltodict
from fastapi.testclient import TestClient
from wechatpy.crypto import WeChatCrypto

from core.app import create_app
from core.settings import Settings
from tests.conftest import Api, create_operator_sync, make_settings
from tests.fakes.wechat_api import FakeWeChatApi

FIXTURES = Path(__file__).parent / "fixtures"
TOKEN = "intake-wechat-token"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"  # 43 characters, like the console's
OLD_AES_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"
ACCOUNT = "gh_0123456789ab"
APP_ID = "wx0123456789abcdef"
APP_SECRET = "s3cret-app-secret"
TEMPLATES = {
    "accepted": {"template_id": "TPL_ACCEPTED", "url": None,
                 "fields": {"character_string1": "{case_number}", "thing2": "{case_type}问题已受理，请您耐心等待处理结果，谢谢",
                            "time3": "{time}"}},
    "closed": {"template_id": "TPL_CLOSED",
               "fields": {"character_string1": "{case_number}", "phrase2": "已办结", "time3": "{time}"}},
}
TEMPLATE_FIELDS = {
    "TPL_ACCEPTED": {"character_string1": "character_string", "thing2": "thing", "time3": "time"},
    "TPL_CLOSED": {"character_string1": "character_string", "phrase2": "phrase", "time3": "time"},
}
MY_TABLES = ("wechat_conversations", "wechat_media", "wechat_tokens", "wechat_nonces")


def jpeg(tag: str) -> bytes:
    """Bytes that sniff as a JPEG, distinct per tag."""
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + hashlib.sha256(tag.encode()).digest() * 8 + b"\xff\xd9"


def signature(*parts: str) -> str:
    """WeChat's signature: sha1 of the sorted, concatenated parts."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


class Harness:
    """Posts messages to /wechat the way WeChat's servers do, and reads the replies back."""

    def __init__(self, api: Api, fake: FakeWeChatApi, *, mode: str, aes_key: str = AES_KEY) -> None:
        self.api = api
        self.fake = fake
        self.mode = mode  # "safe" | "compatible" | "plain"
        self.crypto = WeChatCrypto(TOKEN, aes_key, APP_ID)
        self.ids = itertools.count(int(time.time()) * 1000 + secrets.randbelow(1000) * 1000)
        self.clock = itertools.count(int(time.time()) - 600)
        self.responses: list[httpx.Response] = []

    @property
    def client(self) -> TestClient:
        return self.api.client

    def login(self) -> Api:
        """Create the admin and log in (only tests that use the operators' API pay for password hashing)."""
        if not self.api.csrf:
            create_operator_sync(self.api, "admin")
            self.api.login()
        return self.api

    def build(self, fixture: str, **fields: Any) -> str:
        """Fill an XML fixture."""
        values = {"account": ACCOUNT, "create_time": next(self.clock), "msg_id": next(self.ids)} | fields
        return string.Template((FIXTURES / f"{fixture}.xml").read_text(encoding="utf-8")).substitute(values)

    def envelope(self, xml: str, *, mode: str | None = None, timestamp: int | None = None,
                 nonce: str | None = None) -> tuple[dict[str, str], bytes]:
        """Query and body of one post, signed (and encrypted) like WeChat's."""
        mode = mode or self.mode
        ts = str(timestamp if timestamp is not None else int(time.time()))
        nonce = nonce or str(secrets.randbelow(10**9))
        openid = re.search(r"<FromUserName><!\[CDATA\[(.*?)\]\]>", xml)
        params = {"signature": signature(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce,
                  "openid": openid.group(1) if openid else ""}
        if mode == "plain":
            return params, xml.encode()
        sealed = xmltodict.parse(self.crypto.encrypt_message(xml, nonce, ts))["xml"]
        encrypt = sealed["Encrypt"]
        params |= {"encrypt_type": "aes", "msg_signature": sealed["MsgSignature"]}
        if mode == "compatible":
            body = xml.replace("</xml>", f"<Encrypt><![CDATA[{encrypt}]]></Encrypt>\n</xml>")
        else:
            body = f"<xml>\n  <ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>\n  <Encrypt><![CDATA[{encrypt}]]></Encrypt>\n</xml>"
        return params, body.encode()

    def post(self, xml: str, **kwargs: Any) -> httpx.Response:
        """Post one message."""
        params, body = self.envelope(xml, **kwargs)
        response = self.client.post("/wechat", params=params, content=body, headers={"Content-Type": "text/xml"})
        self.responses.append(response)
        return response

    def reply_of(self, response: httpx.Response) -> str | None:
        """The text a citizen would see, or None for `success`."""
        assert response.status_code == 200, response.text
        if response.text in ("success", ""):
            return None
        doc = xmltodict.parse(response.text)["xml"]
        if "Encrypt" in doc:
            inner = self.crypto.decrypt_message(response.text, doc["MsgSignature"], doc["TimeStamp"], doc["Nonce"])
            doc = xmltodict.parse(inner)["xml"]
        assert doc["MsgType"] == "text"
        assert doc["FromUserName"] == ACCOUNT
        content: str = doc["Content"]
        return content

    def deliver(self, xml: str, *, times: int = 1, **kwargs: Any) -> str | None:
        """Deliver a message `times` times (WeChat's retries) and return the reply, the same every time."""
        replies = [self.reply_of(self.post(xml, **kwargs)) for _ in range(times)]
        assert all(r == replies[0] for r in replies), replies
        return replies[0]

    def user(self, openid: str | None = None, *, times: int = 1) -> User:
        """A citizen who follows the account."""
        openid = openid or "o" + secrets.token_hex(13)
        self.fake.state.followers.add(openid)
        return User(self, openid, times=times)

    def drain(self) -> None:
        """Run the outbox (downloads, classification, notices)."""
        self.api.drain()

    def run(self, coro_fn: Any, *args: Any) -> Any:
        return self.api.run(coro_fn, *args)

    def query(self, stmt: Any) -> list[Any]:
        """Run a SELECT in the app's loop and return all rows (scalars when one column)."""

        async def _q() -> list[Any]:
            async with self.api.ctx.sessions() as session:
                return list((await session.scalars(stmt)).all())

        return list(self.api.run(_q))


class User:
    """One citizen's WeChat client."""

    def __init__(self, harness: Harness, openid: str, *, times: int = 1) -> None:
        self.h = harness
        self.openid = openid
        self.times = times
        self.photos: list[bytes] = []

    def send(self, fixture: str, **fields: Any) -> str | None:
        xml = self.h.build(fixture, openid=self.openid, **fields)
        if fixture != "event" and not fixture.startswith("event"):
            self.h.fake.user_wrote(self.openid)
        return self.h.deliver(xml, times=self.times)

    def text(self, content: str) -> str | None:
        return self.send("text", content=content)

    def image(self, tag: str | None = None) -> str | None:
        media_id = f"MEDIA_{tag or secrets.token_hex(8)}"
        data = jpeg(media_id)
        self.h.fake.add_media(media_id, data)
        self.photos.append(data)
        return self.send("image", media_id=media_id)

    def image_xml(self, tag: str) -> str:
        media_id = f"MEDIA_{tag}"
        data = jpeg(media_id)
        self.h.fake.add_media(media_id, data)
        self.photos.append(data)
        return self.h.build("image", openid=self.openid, media_id=media_id)

    def voice(self, recognition: str, *, audio: bytes = b"#!AMR\n" + b"\x00" * 64) -> str | None:
        media_id = f"VOICE_{secrets.token_hex(8)}"
        self.h.fake.add_media(media_id, audio, "audio/amr")
        return self.send("voice", media_id=media_id, recognition=recognition)

    def location(self, lat: float, lng: float, label: str) -> str | None:
        return self.send("location", lat=lat, lng=lng, label=label)

    def event(self, event: str, key: str = "") -> str | None:
        if event == "subscribe":
            self.h.fake.state.followers.add(self.openid)
        if event == "unsubscribe":
            self.h.fake.state.followers.discard(self.openid)
        return self.send("event", event=event, key=key)

    def click(self, key: str) -> str | None:
        return self.event("CLICK", key)

    def here(self, lat: float, lng: float) -> str | None:
        return self.send("event_location", lat=lat, lng=lng)


@pytest.fixture(scope="session")
def wechat_fake() -> Iterator[FakeWeChatApi]:
    """One fake WeChat API server for the run."""
    fake = FakeWeChatApi(app_id=APP_ID, app_secret=APP_SECRET).start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_api(wechat_fake: FakeWeChatApi) -> FakeWeChatApi:
    """The fake, reset, with the test templates registered."""
    wechat_fake.reset()
    wechat_fake.state.templates = {k: dict(v) for k, v in TEMPLATE_FIELDS.items()}
    return wechat_fake


def _truncate_mine(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        return

    async def _run() -> None:
        import asyncpg

        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute(f"TRUNCATE {', '.join(MY_TABLES)} RESTART IDENTITY CASCADE")
        finally:
            await conn.close()

    asyncio.run(_run())


def wechat_settings(db_url: str, tmp_path: Path, fake: FakeWeChatApi, **overrides: Any) -> Settings:
    """Settings of an app with the official account configured against the fake."""
    values: dict[str, Any] = {
        "wechat_token": TOKEN, "wechat_app_id": APP_ID, "wechat_app_secret": APP_SECRET, "wechat_aes_key": AES_KEY,
        "wechat_api_base_url": fake.base_url, "wechat_templates": TEMPLATES,
    }
    return make_settings(db_url, tmp_path, **(values | overrides))


@pytest.fixture
def wx_settings(db_url: str, tmp_path: Path, fake_api: FakeWeChatApi) -> Settings:
    """Settings for safe mode (AES)."""
    _truncate_mine(db_url)
    return wechat_settings(db_url, tmp_path, fake_api)


def open_harness(settings: Settings, fake: FakeWeChatApi, *, mode: str = "safe") -> Any:
    """Start the app and return (the TestClient to close, the harness)."""
    client = TestClient(create_app(settings))
    client.__enter__()
    harness = Harness(Api(client), fake, mode=mode)
    # The article index and the optional classifier load in the background at start-up; wait for them so
    # the first question is not early and a test's own suggester is not replaced.
    for _ in range(400):
        bot = harness.api.ctx.wechat
        if bot is not None and bot.warmed:
            break
        time.sleep(0.05)
    return client, harness


@pytest.fixture
def wx(wx_settings: Settings, fake_api: FakeWeChatApi) -> Iterator[Harness]:
    """The app in safe mode with an admin logged in."""
    client, harness = open_harness(wx_settings, fake_api)
    try:
        yield harness
    finally:
        client.__exit__(None, None, None)


@pytest.fixture
def wx_plain(db_url: str, tmp_path: Path, fake_api: FakeWeChatApi) -> Iterator[Harness]:
    """The app in plaintext mode (no EncodingAESKey)."""
    _truncate_mine(db_url)
    settings = wechat_settings(db_url, tmp_path, fake_api, wechat_aes_key=None)
    client, harness = open_harness(settings, fake_api, mode="plain")
    try:
        yield harness
    finally:
        client.__exit__(None, None, None)
