"""The one module that imports wechatpy: callback signatures, AES envelopes, message XML and replies,
plus the official-account HTTP API (stable token, media, template and customer-service messages, menu).

wechatpy 1.8.18 covers the callback protocol well, so every inbound byte goes through it. Its HTTP client
does not fit this service: it is synchronous (requests), hard-codes the `/cgi-bin/token` URL (whose every
call invalidates the other processes' token) and has no `stable_token`. The outbound calls therefore use
the service's async httpx client against `INTAKE_WECHAT_API_BASE_URL`, with wechatpy's error codes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from xml.parsers.expat import ExpatError

import httpx
import xmltodict
from wechatpy import parse_message
from wechatpy.constants import WeChatErrorCode
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.messages import BaseMessage
from wechatpy.replies import TextReply

from core.errors import AppError

log = logging.getLogger(__name__)

# Passive text replies longer than about 2048 bytes are dropped by WeChat (observed, not documented).
MAX_REPLY_BYTES = 2000


class WeChatNotConfigured(AppError):
    """The official account is not configured on this server."""

    status_code = 404
    error_id = "wechat-not-configured"
    message = "未配置微信公众号"


class BadSignature(AppError):
    """The signature does not match the server token (or the AES envelope's msg_signature)."""

    status_code = 403
    error_id = "wechat-bad-signature"
    message = "签名错误"


class StaleRequest(AppError):
    """The callback's timestamp is outside the accepted clock skew: a replay or a broken clock."""

    status_code = 403
    error_id = "wechat-stale-request"
    message = "请求已过期"


class ReplayedNonce(AppError):
    """A plaintext-mode nonce came back with a different body: a captured URL reused with forged XML."""

    status_code = 403
    error_id = "wechat-replayed-nonce"
    message = "请求已被使用"


class EncryptionRequired(AppError):
    """Safe mode is configured but the post came unencrypted."""

    status_code = 403
    error_id = "wechat-encryption-required"
    message = "需要安全模式加密消息"


class BadMessage(AppError):
    """The body is not a WeChat message: malformed XML, entities or DOCTYPE, missing fields, bad cipher text."""

    status_code = 400
    error_id = "wechat-bad-message"
    message = "消息格式错误"


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message or event from a citizen, reduced to the fields the bot uses."""

    kind: str  # text | image | voice | location | video | shortvideo | link | event | unknown
    openid: str
    account: str
    create_time: int
    msg_id: int = 0
    content: str = ""
    media_id: str = ""
    recognition: str = ""
    voice_format: str = ""
    lat: float | None = None
    lng: float | None = None
    label: str = ""
    event: str = ""
    event_key: str = ""
    status: str = ""
    raw_type: str = ""

    @property
    def dedupe_key(self) -> str:
        """Key of this delivery: MsgId for messages, CreateTime + event for events (they have no MsgId)."""
        if self.msg_id:
            return f"m{self.msg_id}"
        return f"e{self.create_time}:{self.event}:{self.event_key}"[:96]


@dataclass(frozen=True, slots=True)
class Opened:
    """A verified, decrypted and parsed callback, with what is needed to answer it."""

    message: Inbound
    nonce: str
    encrypted: bool
    key_index: int = 0


def _sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()  # noqa: S324 - WeChat's protocol


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _reduce(message: BaseMessage) -> Inbound:
    """Translate wechatpy's message object into our own type."""
    common: dict[str, Any] = {
        "openid": str(message.source or ""),
        "account": str(message.target or ""),
        "create_time": int(message.time or 0),
        "msg_id": int(message.id or 0),
        "raw_type": str(getattr(message, "type", "")),
    }
    kind = common["raw_type"]
    if kind == "text":
        return Inbound(kind=kind, content=str(message.content or ""), **common)
    if kind == "image":
        return Inbound(kind=kind, media_id=str(message.media_id or ""), **common)
    if kind == "voice":
        return Inbound(kind=kind, media_id=str(message.media_id or ""), recognition=str(message.recognition or ""),
                       voice_format=str(message.format or ""), **common)
    if kind == "location":
        return Inbound(kind=kind, lat=_float(message.location_x), lng=_float(message.location_y),
                       label=str(message.label or ""), **common)
    if kind in ("video", "shortvideo", "link", "miniprogrampage"):
        return Inbound(kind=kind if kind != "miniprogrampage" else "link", **common)
    if kind == "event":
        event = str(getattr(message, "event", "") or "").lower()
        data = getattr(message, "_data", {}) or {}
        key = data.get("EventKey") or ""
        lat = lng = None
        if event == "location":
            lat, lng = _float(data.get("Latitude")), _float(data.get("Longitude"))
        status = str(data.get("Status") or "") if event == "templatesendjobfinish" else ""
        msg_ref = int(data.get("MsgID") or 0) if event == "templatesendjobfinish" else 0
        return Inbound(kind="event", event=event, event_key=str(key) if isinstance(key, str) else "",
                       lat=lat, lng=lng, status=status, content=str(msg_ref or ""), **common)
    data = getattr(message, "_data", {}) or {}
    if str(data.get("MsgType", "")).lower() == "event":
        # An event wechatpy 1.8.18 does not know (e.g. subscribe_msg_popup_event): keep its name.
        event = str(data.get("Event") or "").lower()
        return Inbound(kind="event", event=event, **(common | {"raw_type": "event"}))
    return Inbound(kind="unknown", **(common | {"raw_type": str(data.get("MsgType", ""))[:32]}))


def _refuse_dtd(xml: str) -> None:
    """Refuse a DOCTYPE (the only place entities can be declared: XXE, billion laughs); WeChat sends none.

    Only the prolog before the root element is looked at, so a citizen's text that merely contains
    "<!ENTITY" inside CDATA is not mistaken for one; xmltodict's disabled entities are the second guard.
    """
    root = xml.find("<xml")
    prolog = (xml if root < 0 else xml[:root]).upper()
    if "<!DOCTYPE" in prolog or "<!ENTITY" in prolog:
        raise BadMessage("消息包含不允许的 DTD/实体声明", error_id="wechat-xml-entities")


def _parse_envelope(xml: str) -> dict[str, Any]:
    """Parse the outer XML of an encrypted post."""
    _refuse_dtd(xml)
    try:
        doc = xmltodict.parse(xml, disable_entities=True)
    except (ValueError, ExpatError) as err:  # xmltodict refuses entities with ValueError
        raise BadMessage(details={"reason": type(err).__name__}) from err
    root = doc.get("xml") if isinstance(doc, dict) else None
    if not isinstance(root, dict):
        raise BadMessage(details={"reason": "no <xml> root"})
    return root


def _parse_message(xml: str) -> BaseMessage:
    """Parse message XML with wechatpy (xmltodict underneath, entities disabled)."""
    _refuse_dtd(xml)
    try:
        message = parse_message(xml)
    except (ValueError, ExpatError, KeyError, TypeError, AttributeError) as err:
        raise BadMessage(details={"reason": type(err).__name__}) from err
    if message is None:
        raise BadMessage(details={"reason": "empty message"})
    return message


class CallbackCodec:
    """Verify, decrypt and parse WeChat's callbacks, and render (encrypted) passive replies."""

    def __init__(
        self,
        *,
        token: str,
        app_id: str,
        aes_keys: list[str],
        accept_plaintext: bool = False,
        max_skew_seconds: int = 300,
    ) -> None:
        """Use the server token; with AES keys (current first, then the previous one) safe mode is on."""
        self.token = token
        self.app_id = app_id
        self.accept_plaintext = accept_plaintext or not aes_keys
        self.max_skew = max_skew_seconds
        self._cryptos = [WeChatCrypto(token, key, app_id) for key in aes_keys]

    @property
    def safe_mode(self) -> bool:
        """Tell whether an EncodingAESKey is configured."""
        return bool(self._cryptos)

    def _check_time(self, timestamp: str, now: float) -> None:
        try:
            stamp = int(timestamp)
        except ValueError as err:
            raise StaleRequest(details={"reason": "timestamp is not a number"}) from err
        if abs(now - stamp) > self.max_skew:
            raise StaleRequest(details={"skew_seconds": int(now - stamp)})

    def _check_signature(self, params: Mapping[str, str], now: float) -> tuple[str, str]:
        signature, timestamp, nonce = (params.get(k, "") for k in ("signature", "timestamp", "nonce"))
        if not (signature and timestamp and nonce):
            raise BadSignature(details={"reason": "signature, timestamp and nonce are required"})
        if not _same(_sign(self.token, timestamp, nonce), signature):
            raise BadSignature()
        self._check_time(timestamp, now)
        return timestamp, nonce

    def verify_url(self, params: Mapping[str, str], *, now: float | None = None) -> str:
        """Answer WeChat's URL check: the echostr when the signature is right."""
        self._check_signature(params, time.time() if now is None else now)
        echostr = params.get("echostr", "")
        if not echostr or len(echostr) > 256:
            raise BadMessage(details={"reason": "echostr missing"})
        return echostr

    def open(self, body: bytes, params: Mapping[str, str], *, now: float | None = None) -> Opened:
        """Verify the signature and clock, decrypt when encrypted, and parse the message."""
        now = time.time() if now is None else now
        timestamp, nonce = self._check_signature(params, now)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as err:
            raise BadMessage(details={"reason": "body is not UTF-8"}) from err
        encrypted = params.get("encrypt_type", "").lower() == "aes"
        key_index = 0
        if encrypted:
            if not self._cryptos:
                raise BadMessage("未配置 EncodingAESKey，无法解密", error_id="wechat-no-aes-key")
            outer = _parse_envelope(text)
            text, key_index = self._decrypt(outer, params.get("msg_signature", ""), timestamp, nonce)
        elif not self.accept_plaintext:
            raise EncryptionRequired()
        message = _parse_message(text)
        try:
            reduced = _reduce(message)
        except (ValueError, TypeError, AttributeError) as err:
            raise BadMessage(details={"reason": type(err).__name__}) from err
        if not reduced.openid:
            raise BadMessage(details={"reason": "FromUserName missing"})
        return Opened(message=reduced, nonce=nonce, encrypted=encrypted, key_index=key_index)

    def _decrypt(self, outer: dict[str, Any], msg_signature: str, timestamp: str, nonce: str) -> tuple[str, int]:
        encrypt = outer.get("Encrypt")
        if not isinstance(encrypt, str) or not msg_signature:
            raise BadMessage(details={"reason": "Encrypt or msg_signature missing"})
        # The msg_signature covers the cipher text, so it is checked (in constant time) before decrypting.
        if not _same(_sign(self.token, timestamp, nonce, encrypt), msg_signature):
            raise BadSignature(error_id="wechat-bad-msg-signature")
        last: Exception | None = None
        for index, crypto in enumerate(self._cryptos):
            try:
                plain = crypto.decrypt_message({"Encrypt": encrypt}, msg_signature, timestamp, nonce)
                return str(plain), index
            except InvalidSignatureException as err:
                raise BadSignature(error_id="wechat-bad-msg-signature") from err
            except InvalidAppIdException as err:
                raise BadMessage("消息不属于本公众号", error_id="wechat-wrong-app-id") from err
            except Exception as err:  # noqa: BLE001 - padding, base64 and UTF-8 errors all mean "wrong key"
                last = err
        raise BadMessage(error_id="wechat-decrypt-failed", details={"reason": type(last).__name__}) from last

    def render_text(self, opened: Opened, text: str, *, timestamp: int | None = None) -> str:
        """Render a passive text reply, encrypted like the request when it came encrypted."""
        message = opened.message
        reply = TextReply(source=message.account, target=message.openid, content=fit_reply(text),
                          time=timestamp or int(time.time()))
        xml = str(reply.render())
        if opened.encrypted:
            crypto = self._cryptos[opened.key_index]
            return str(crypto.encrypt_message(xml, opened.nonce, str(timestamp or int(time.time()))))
        return xml


def fit_reply(text: str, limit: int = MAX_REPLY_BYTES) -> str:
    """Cut a reply to WeChat's passive-reply size, at a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", errors="ignore") + "…"


# --- the official-account API ----------------------------------------------------------------------

TOKEN_ERRORS = frozenset({
    WeChatErrorCode.INVALID_CREDENTIAL.value,  # 40001
    WeChatErrorCode.INVALID_ACCESS_TOKEN.value,  # 40014
    WeChatErrorCode.EXPIRED_ACCESS_TOKEN.value,  # 42001
})
# System busy, frequency limits: worth retrying later.
TEMPORARY_ERRORS = frozenset({-1, WeChatErrorCode.OUT_OF_API_FREQ_LIMIT.value, 45011, 45047})
OUT_OF_WINDOW = 45015  # customer-service message outside the 48-hour window
UNFOLLOWED = 43004  # the user does not follow the account
INVALID_OPENID = 40003
INVALID_MEDIA_ID = 40007
INVALID_TEMPLATE = 40037
FIELD_INVALID = 47003


class WeChatApiError(Exception):
    """A WeChat API call failed."""

    def __init__(self, message: str, *, errcode: int | None = None) -> None:
        """Keep WeChat's errcode (None for transport errors)."""
        super().__init__(message)
        self.errcode = errcode


class WeChatUnavailable(WeChatApiError):
    """Timeout, 5xx, system busy or a frequency limit: retry later."""


class WeChatRejected(WeChatApiError):
    """WeChat refused the call for good (unfollowed, out of window, bad template data, expired media)."""


class TokenSource(Protocol):
    """Where the API client gets the account's access token from."""

    async def get(self) -> str:
        """Return a valid access token."""
        ...

    async def invalidate(self, token: str) -> None:
        """WeChat rejected this token: replace it."""
        ...


@dataclass(frozen=True, slots=True)
class Download:
    """A downloaded media file."""

    data: bytes
    content_type: str


class MediaTooLarge(WeChatRejected):
    """The media file exceeds the configured size limit."""


class WeChatApi(Protocol):
    """What the bot needs from the official-account API (a fake implements it in tests)."""

    async def stable_token(self, *, force: bool = False) -> tuple[str, int]:
        """Return (access_token, expires_in seconds)."""
        ...

    async def download_media(self, media_id: str, *, max_bytes: int) -> Download:
        """Download a temporary media file."""
        ...

    async def send_template(self, openid: str, template_id: str, data: dict[str, dict[str, str]], *,
                            url: str | None, client_msg_id: str) -> str:
        """Send a template message and return its msgid."""
        ...

    async def send_text(self, openid: str, text: str) -> None:
        """Send a customer-service text message."""
        ...

    async def create_menu(self, menu: dict[str, Any]) -> None:
        """Replace the custom menu."""
        ...


class HttpWeChatApi:
    """The official-account API over httpx; tokens come from a shared TokenSource, refreshed on 40001/42001."""

    def __init__(self, *, base_url: str, app_id: str, app_secret: str, http: httpx.AsyncClient,
                 tokens: TokenSource | None = None) -> None:
        """Call `base_url` (ending in /cgi-bin/) with the account's credentials."""
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.app_id = app_id
        self._secret = app_secret
        self._http = http
        self.tokens = tokens

    @staticmethod
    def _check(result: Any) -> dict[str, Any]:
        if not isinstance(result, dict):
            raise WeChatUnavailable("unexpected answer from WeChat")
        errcode = int(result.get("errcode") or 0)
        if errcode:
            message = f"{errcode} {str(result.get('errmsg', ''))[:120]}"
            if errcode in TEMPORARY_ERRORS:
                raise WeChatUnavailable(message, errcode=errcode)
            raise WeChatRejected(message, errcode=errcode)
        return result

    async def _send(self, method: str, path: str, *, params: dict[str, str] | None = None,
                    body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            content = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
            response = await self._http.request(method, self.base_url + path, params=params, content=content,
                                                headers={"Content-Type": "application/json"} if content else None)
        except httpx.HTTPError as err:
            raise WeChatUnavailable(f"{type(err).__name__} calling {path}") from err
        if response.status_code >= 500:
            raise WeChatUnavailable(f"HTTP {response.status_code} from {path}")
        if response.status_code >= 400:
            raise WeChatRejected(f"HTTP {response.status_code} from {path}")
        return response

    async def _call(self, method: str, path: str, *, body: dict[str, Any] | None = None,
                    params: dict[str, str] | None = None) -> dict[str, Any]:
        """Call an authenticated endpoint; on a token error get a fresh token and try once more."""
        if self.tokens is None:
            raise WeChatRejected("no access-token source configured")
        for attempt in (1, 2):
            token = await self.tokens.get()
            response = await self._send(method, path, params={**(params or {}), "access_token": token}, body=body)
            try:
                result = response.json()
            except ValueError as err:
                raise WeChatUnavailable(f"non-JSON answer from {path}") from err
            errcode = int(result.get("errcode") or 0) if isinstance(result, dict) else 0
            if errcode in TOKEN_ERRORS and attempt == 1:
                log.info("wechat rejected the access token (%s); refreshing", errcode)
                await self.tokens.invalidate(token)
                continue
            return self._check(result)
        raise WeChatUnavailable("access token rejected twice")  # pragma: no cover - loop always returns

    async def stable_token(self, *, force: bool = False) -> tuple[str, int]:
        """Fetch the stable access token: every caller gets the same one, refreshed by WeChat 5 min early."""
        response = await self._send("POST", "stable_token", body={
            "grant_type": "client_credential", "appid": self.app_id, "secret": self._secret,
            "force_refresh": force,
        })
        try:
            result = self._check(response.json())
        except ValueError as err:
            raise WeChatUnavailable("non-JSON answer from stable_token") from err
        token = result.get("access_token")
        if not isinstance(token, str) or not token:
            raise WeChatUnavailable("stable_token answered without a token")
        return token, int(result.get("expires_in") or 7200)

    async def download_media(self, media_id: str, *, max_bytes: int) -> Download:
        """Download a temporary media file, refusing more than `max_bytes`; errors come back as JSON."""
        if self.tokens is None:
            raise WeChatRejected("no access-token source configured")
        for attempt in (1, 2):
            token = await self.tokens.get()
            try:
                async with self._http.stream("GET", self.base_url + "media/get",
                                             params={"access_token": token, "media_id": media_id}) as response:
                    if response.status_code >= 500:
                        raise WeChatUnavailable(f"HTTP {response.status_code} from media/get")
                    if response.status_code >= 400:
                        raise WeChatRejected(f"HTTP {response.status_code} from media/get")
                    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > max_bytes:
                        raise MediaTooLarge(f"media of {declared} bytes exceeds {max_bytes}")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise MediaTooLarge(f"media exceeds {max_bytes} bytes")
                        chunks.append(chunk)
            except httpx.HTTPError as err:
                raise WeChatUnavailable(f"{type(err).__name__} downloading media") from err
            data = b"".join(chunks)
            if content_type in ("application/json", "text/plain", "text/json") or data[:1] == b"{":
                try:
                    result = json.loads(data)
                except ValueError:
                    result = None
                if isinstance(result, dict):
                    errcode = int(result.get("errcode") or 0)
                    if errcode in TOKEN_ERRORS and attempt == 1:
                        await self.tokens.invalidate(token)
                        continue
                    if "video_url" in result:
                        raise WeChatRejected("video media is not downloaded")
                    self._check(result)
            return Download(data=data, content_type=content_type)
        raise WeChatUnavailable("access token rejected twice")  # pragma: no cover

    async def send_template(self, openid: str, template_id: str, data: dict[str, dict[str, str]], *,
                            url: str | None, client_msg_id: str) -> str:
        """Send a template message; client_msg_id makes WeChat drop a repeat within minutes."""
        body: dict[str, Any] = {"touser": openid, "template_id": template_id, "data": data,
                                "client_msg_id": client_msg_id[:64]}
        if url:
            body["url"] = url
        result = await self._call("POST", "message/template/send", body=body)
        return str(result.get("msgid", ""))

    async def send_text(self, openid: str, text: str) -> None:
        """Send a customer-service text (only within 48 h of the citizen's last message)."""
        await self._call("POST", "message/custom/send",
                         body={"touser": openid, "msgtype": "text", "text": {"content": text}})

    async def create_menu(self, menu: dict[str, Any]) -> None:
        """Replace the custom menu."""
        await self._call("POST", "menu/create", body=menu)
