"""Outbound HTTP for webhooks and 12345 callbacks (the one module that imports httpx here)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpx


class DeliveryError(Exception):
    """The receiver could not be reached or refused; `temporary` says whether a retry can help."""

    def __init__(self, message: str, *, temporary: bool, status_code: int | None = None,
                 duration_ms: int = 0) -> None:
        """Describe the failure without secrets or bodies."""
        super().__init__(message)
        self.temporary = temporary
        self.status_code = status_code
        self.duration_ms = duration_ms


class UnsafeUrl(ValueError):
    """A URL we refuse to call: not http(s), or pointing at a private or local address."""


@dataclass(frozen=True, slots=True)
class Delivered:
    """A receiver accepted the message."""

    status_code: int
    duration_ms: int


class WebhookSender(Protocol):
    """Posts a signed body to a receiver."""

    async def post(self, url: str, *, body: bytes, headers: dict[str, str]) -> Delivered:
        """Send once; raise DeliveryError when the receiver does not answer 2xx."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def check_url_syntax(url: str) -> str:
    """Accept only absolute http(s) URLs without credentials; return the URL unchanged."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeUrl("只接受 http 或 https 地址")
    if parts.username or parts.password:
        raise UnsafeUrl("地址中不能包含用户名或密码")
    return url


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip.is_unspecified)


async def check_destination(url: str, *, allow_private: bool) -> None:
    """Refuse receivers on private, loopback or link-local addresses (no SSRF into the centre's network)."""
    check_url_syntax(url)
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    except OSError as err:
        raise DeliveryError(f"cannot resolve {host}", temporary=True) from err
    for info in infos:
        if not _is_public(str(info[4][0])):
            raise UnsafeUrl(f"{host} resolves to a non-public address")


class HttpxWebhookSender:
    """Posts with a dedicated httpx client: no redirects (a redirect could point anywhere), short timeouts."""

    def __init__(self, *, timeout: float, allow_private: bool) -> None:
        """Create the connection pool."""
        self._http = httpx.AsyncClient(follow_redirects=False, timeout=timeout,
                                       headers={"User-Agent": "city-intake-webhooks/1"})
        self._allow_private = allow_private

    async def post(self, url: str, *, body: bytes, headers: dict[str, str]) -> Delivered:
        """Send once; 2xx is success, 408/425/429/5xx and network errors are temporary, other 4xx final."""
        try:
            await check_destination(url, allow_private=self._allow_private)
        except UnsafeUrl as err:
            raise DeliveryError(f"refused destination: {err}", temporary=False) from err
        start = time.perf_counter()
        try:
            response = await self._http.post(url, content=body, headers=headers)
        except httpx.HTTPError as err:
            ms = int((time.perf_counter() - start) * 1000)
            raise DeliveryError(f"{type(err).__name__}", temporary=True, duration_ms=ms) from err
        ms = int((time.perf_counter() - start) * 1000)
        code = response.status_code
        if 200 <= code < 300:
            return Delivered(status_code=code, duration_ms=ms)
        temporary = code >= 500 or code in (408, 425, 429) or 300 <= code < 400
        raise DeliveryError(f"receiver answered {code}", temporary=temporary, status_code=code, duration_ms=ms)

    async def aclose(self) -> None:
        """Close the pool."""
        await self._http.aclose()
