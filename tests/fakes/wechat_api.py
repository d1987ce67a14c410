"""A protocol-faithful local WeChat official-account API (the /cgi-bin/ endpoints the bot calls).

Faithful where the bot depends on it: access tokens are checked on every call (40001 unknown, 42001
expired, 41001 missing); `token` invalidates earlier tokens after 5 minutes; `stable_token` hands every
caller the same token until 5 minutes before expiry and a forced refresh invalidates it (30 s apart at
most); media downloads answer bytes or a JSON error as text/plain; template messages check the
template, the follower and each field's length (47003); customer-service messages need a message from
the user within 48 hours (45015); the menu is checked for WeChat's size limits. Errors can be injected.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.workflow_platform import free_port

LIMITS = {"thing": 20, "character_string": 32, "phrase": 5, "number": 32, "letter": 32, "time": 32, "name": 10}
WINDOW = 48 * 3600


def _json(body: dict[str, Any]) -> JSONResponse:
    # WeChat answers errors with HTTP 200 and an errcode.
    return JSONResponse(body, headers={"Content-Type": "application/json; encoding=utf-8"})


@dataclass
class WeChatState:
    """What the fake has seen, what it knows, and how it should misbehave."""

    app_id: str
    app_secret: str
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (time.time())
    stable: str | None = None
    last_forced: float = 0.0
    token_calls: int = 0
    stable_calls: int = 0
    followers: set[str] = field(default_factory=set)
    last_message: dict[str, float] = field(default_factory=dict)  # openid -> when the user last wrote
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    media_requests: list[str] = field(default_factory=list)
    templates: dict[str, dict[str, str]] = field(default_factory=dict)  # template id -> field -> type
    template_sent: list[dict[str, Any]] = field(default_factory=list)
    client_msg_ids: dict[tuple[str, str], int] = field(default_factory=dict)
    custom_sent: list[dict[str, Any]] = field(default_factory=list)
    menus: list[dict[str, Any]] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)  # tokens WeChat refuses (40001) though stable_token returns them
    fail_next: list[int] = field(default_factory=list)  # errcodes to answer the next authenticated calls with
    slow_seconds: float = 0.0
    token_ttl: int = 7200
    msgid: int = 1000
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeWeChatApi:
    """Runs the fake API in a background thread; the base URL ends in /cgi-bin/ like WeChat's."""

    def __init__(self, *, app_id: str = "wx0123456789abcdef", app_secret: str = "s3cret-app-secret") -> None:
        """Prepare the app; call start()."""
        self.state = WeChatState(app_id=app_id, app_secret=app_secret)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/cgi-bin/"
        app = Starlette(routes=[
            Route("/cgi-bin/token", self._token, methods=["GET"]),
            Route("/cgi-bin/stable_token", self._stable_token, methods=["POST"]),
            Route("/cgi-bin/media/get", self._media_get, methods=["GET"]),
            Route("/cgi-bin/message/template/send", self._template_send, methods=["POST"]),
            Route("/cgi-bin/message/custom/send", self._custom_send, methods=["POST"]),
            Route("/cgi-bin/menu/create", self._menu_create, methods=["POST"]),
        ])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> FakeWeChatApi:
        """Start serving and wait until the port answers."""
        self._thread.start()
        for _ in range(100):
            if self._server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("fake WeChat API did not start")

    def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        self._thread.join(timeout=5)

    def reset(self) -> None:
        """Forget everything (between tests)."""
        self.state = WeChatState(app_id=self.state.app_id, app_secret=self.state.app_secret)

    # --- helpers for tests ---

    def add_media(self, media_id: str, data: bytes, content_type: str = "image/jpeg") -> None:
        """Make a temporary media file available for download."""
        with self.state.lock:
            self.state.media[media_id] = (data, content_type)

    def user_wrote(self, openid: str, *, ago: float = 0.0) -> None:
        """Record that the user sent the account a message (opens the 48-hour window), and follows it."""
        with self.state.lock:
            self.state.last_message[openid] = time.time() - ago
            self.state.followers.add(openid)

    def revoke(self, token: str) -> None:
        """Make WeChat refuse a token with 40001 while stable_token (not forced) keeps handing it out."""
        with self.state.lock:
            self.state.revoked.add(token)

    def expire_tokens(self) -> None:
        """Expire every issued token (as if 2 hours had passed)."""
        with self.state.lock:
            self.state.tokens = dict.fromkeys(self.state.tokens, 0.0)

    # --- protocol ---

    def _issue(self) -> str:
        token = secrets.token_urlsafe(96)[:128]
        self.state.tokens[token] = time.time() + self.state.token_ttl
        return token

    def _auth(self, request: Request) -> JSONResponse | None:
        token = request.query_params.get("access_token")
        st = self.state
        with st.lock:
            if not token:
                return _json({"errcode": 41001, "errmsg": "access_token missing"})
            expiry = st.tokens.get(token)
            if expiry is None or token in st.revoked:
                return _json({"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"})
            if expiry < time.time():
                return _json({"errcode": 42001, "errmsg": "access_token expired"})
            if st.fail_next:
                code = st.fail_next.pop(0)
                return _json({"errcode": code, "errmsg": "system error" if code == -1 else "injected"})
        return None

    async def _body(self, request: Request) -> dict[str, Any] | None:
        try:
            body = json.loads((await request.body()).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    async def _token(self, request: Request) -> Response:
        q = request.query_params
        st = self.state
        if q.get("grant_type") != "client_credential":
            return _json({"errcode": 40002, "errmsg": "invalid grant_type"})
        if q.get("appid") != st.app_id or q.get("secret") != st.app_secret:
            return _json({"errcode": 40125, "errmsg": "invalid appsecret"})
        with st.lock:
            st.token_calls += 1
            # Each call invalidates the earlier tokens after a 5-minute overlap.
            now = time.time()
            st.tokens = {t: min(exp, now + 300) for t, exp in st.tokens.items()}
            token = self._issue()
        return _json({"access_token": token, "expires_in": st.token_ttl})

    async def _stable_token(self, request: Request) -> Response:
        body = await self._body(request)
        st = self.state
        if body is None:
            return _json({"errcode": 47001, "errmsg": "data format error"})
        if body.get("grant_type") != "client_credential":
            return _json({"errcode": 40002, "errmsg": "invalid grant_type"})
        if body.get("appid") != st.app_id:
            return _json({"errcode": 40013, "errmsg": "invalid appid"})
        if body.get("secret") != st.app_secret:
            return _json({"errcode": 40125, "errmsg": "invalid appsecret"})
        now = time.time()
        with st.lock:
            st.stable_calls += 1
            if body.get("force_refresh"):
                if now - st.last_forced < 30:
                    return _json({"errcode": 45009, "errmsg": "reach max api daily quota limit"})
                st.last_forced = now
                if st.stable:
                    st.tokens.pop(st.stable, None)
                st.stable = self._issue()
            elif st.stable is None or st.tokens.get(st.stable, 0) - now < 300:
                # Within 5 minutes of expiry a new token is issued; the old one lives until it expires.
                st.stable = self._issue()
            return _json({"access_token": st.stable, "expires_in": int(st.tokens[st.stable] - now)})

    async def _media_get(self, request: Request) -> Response:
        denied = self._auth(request)
        if denied is not None:
            return denied
        media_id = request.query_params.get("media_id", "")
        with self.state.lock:
            self.state.media_requests.append(media_id)
            item = self.state.media.get(media_id)
        if item is None:
            # The real API answers media errors as JSON with a text/plain content type.
            return Response(json.dumps({"errcode": 40007, "errmsg": "invalid media_id"}), media_type="text/plain")
        data, content_type = item
        ext = {"image/jpeg": "jpg", "image/png": "png", "audio/amr": "amr"}.get(content_type, "bin")
        return Response(data, media_type=content_type,
                        headers={"Content-disposition": f'attachment; filename="{media_id[:16]}.{ext}"'})

    async def _template_send(self, request: Request) -> Response:
        denied = self._auth(request)
        if denied is not None:
            return denied
        body = await self._body(request)
        st = self.state
        if body is None:
            return _json({"errcode": 47001, "errmsg": "data format error"})
        touser, template_id = body.get("touser"), body.get("template_id")
        with st.lock:
            if touser not in st.followers:
                return _json({"errcode": 43004, "errmsg": "require subscribe"})
            fields = st.templates.get(str(template_id))
            if fields is None:
                return _json({"errcode": 40037, "errmsg": "invalid template_id"})
            data = body.get("data") or {}
            for name, kind in fields.items():
                value = (data.get(name) or {}).get("value")
                if not isinstance(value, str) or not value:
                    return _json({"errcode": 47003, "errmsg": f"argument invalid! data.{name}.value is empty"})
                if len(value) > LIMITS.get(kind, 20) or (kind == "character_string" and not value.isascii()):
                    return _json({"errcode": 47003, "errmsg": f"argument invalid! data.{name}.value invalid"})
            key = (str(touser), str(body.get("client_msg_id", "")))
            if key[1] and key in st.client_msg_ids:
                return _json({"errcode": 0, "errmsg": "ok", "msgid": st.client_msg_ids[key]})
            st.msgid += 1
            if key[1]:
                st.client_msg_ids[key] = st.msgid
            st.template_sent.append(body | {"msgid": st.msgid})
            return _json({"errcode": 0, "errmsg": "ok", "msgid": st.msgid})

    async def _custom_send(self, request: Request) -> Response:
        denied = self._auth(request)
        if denied is not None:
            return denied
        body = await self._body(request)
        st = self.state
        if body is None or body.get("msgtype") != "text" or not (body.get("text") or {}).get("content"):
            return _json({"errcode": 47001, "errmsg": "data format error"})
        touser = str(body.get("touser"))
        with st.lock:
            last = st.last_message.get(touser)
            if touser not in st.followers or last is None or time.time() - last > WINDOW:
                return _json({"errcode": 45015, "errmsg": "response out of time limit or subscription is canceled"})
            st.custom_sent.append(body)
        return _json({"errcode": 0, "errmsg": "ok"})

    async def _menu_create(self, request: Request) -> Response:
        denied = self._auth(request)
        if denied is not None:
            return denied
        body = await self._body(request)
        if body is None:
            return _json({"errcode": 47001, "errmsg": "data format error"})
        buttons = body.get("button")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            return _json({"errcode": 40016, "errmsg": "invalid button size"})
        for button in buttons:
            if len(str(button.get("name", "")).encode()) > 16:
                return _json({"errcode": 40018, "errmsg": "invalid button name size"})
            subs = button.get("sub_button") or []
            if len(subs) > 5:
                return _json({"errcode": 40023, "errmsg": "invalid sub button size"})
            for item in subs or [button]:
                if item is not button and len(str(item.get("name", "")).encode()) > 60:
                    return _json({"errcode": 40018, "errmsg": "invalid sub button name size"})
                if item.get("type") not in ("click", "view", "location_select", "pic_photo_or_album",
                                            "pic_sysphoto", "scancode_push"):
                    return _json({"errcode": 40017, "errmsg": "invalid button type"})
                if item.get("type") == "click" and not 0 < len(str(item.get("key", "")).encode()) <= 128:
                    return _json({"errcode": 40019, "errmsg": "invalid button key size"})
        with self.state.lock:
            self.state.menus.append(body)
        return _json({"errcode": 0, "errmsg": "ok"})
