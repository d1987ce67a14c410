"""The app's one HTTP middleware: body cap, access log, security headers, as plain ASGI."""

from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import error_body

access = logging.getLogger("intake.access")

_CSP = (b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"frame-ancestors 'none'")
_ALWAYS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
           (b"referrer-policy", b"same-origin"))


class EdgeMiddleware:
    """Plain ASGI rather than three `BaseHTTPMiddleware`s: those cost a task group and a copy per request."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        """Wrap `app`; bodies declared larger than `max_body_bytes` are refused before they are read."""
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one HTTP request; other scopes (lifespan, websocket) pass straight through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in _ALWAYS if h[0] not in present)
                content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
                if content_type.startswith(b"text/html") and b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", _CSP))
                message = {**message, "headers": headers}
            await send(message)

        try:
            length = Headers(scope=scope).get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                # Refused by declared length, before a byte of the body is read.
                too_large = JSONResponse(error_body("body-too-large", "请求内容过大"), status_code=413)
                await too_large(scope, receive, send_with_headers)
            else:
                await self.app(scope, receive, send_with_headers)
        finally:
            # Our own access log, path only: query strings carry WeChat's openid and signatures (personal data).
            _log(scope, status, started)


def _log(scope: Scope, status: int, started: float) -> None:
    if access.isEnabledFor(logging.INFO):
        access.info("%s %s %d %.1fms", scope.get("method", "-"), scope.get("path", "-"), status,
                    (time.perf_counter() - started) * 1000)

