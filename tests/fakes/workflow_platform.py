"""A protocol-faithful local 数字城管 platform (docs/workflow-contract.md), with fault injection."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PlatformState:
    """What the fake platform has seen and how it should misbehave."""

    api_key: str
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, idempotency key)
    created: list[str] = field(default_factory=list)  # submit keys in creation order
    ratings: list[tuple[str, int]] = field(default_factory=list)
    rated_keys: set[str] = field(default_factory=set)
    down: bool = False
    fail_next: int = 0
    slow_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakePlatform:
    """Runs the platform in a background thread on a free port."""

    def __init__(self, *, api_key: str = "platform-key") -> None:
        """Prepare the app; call start()."""
        self.state = PlatformState(api_key=api_key)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[
            Route("/health", self._health, methods=["GET"]),
            Route("/cases", self._create, methods=["POST"]),
            Route("/cases/{number}/rating", self._rate, methods=["POST"]),
        ])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> FakePlatform:
        """Start serving and wait until the port answers."""
        self._thread.start()
        for _ in range(100):
            if self._server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("fake platform did not start")

    def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        self._thread.join(timeout=5)

    async def _misbehave(self) -> JSONResponse | None:
        st = self.state
        if st.slow_seconds:
            await asyncio.sleep(st.slow_seconds)
        with st.lock:
            if st.down:
                return JSONResponse({"error": "maintenance"}, status_code=503)
            if st.fail_next > 0:
                st.fail_next -= 1
                return JSONResponse({"error": "temporary"}, status_code=502)
        return None

    def _authorised(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.state.api_key}"

    async def _health(self, request: Request) -> JSONResponse:
        if self.state.down:
            return JSONResponse({"status": "down"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def _create(self, request: Request) -> JSONResponse:
        if not self._authorised(request):
            return JSONResponse({"error": "unauthorised"}, status_code=401)
        key = request.headers.get("idempotency-key", "")
        body = json.loads(await request.body())
        with self.state.lock:
            self.state.requests.append(("/cases", key))
            if self.state.down:
                return JSONResponse({"error": "maintenance"}, status_code=503)
        failure = await self._misbehave()
        with self.state.lock:
            existing = self.state.cases.get(key)
            if existing is None:
                # Work happens before a possible failure answer: this is how a timeout creates a case
                # the client never heard about, which the idempotency key must absorb.
                number = f"P{len(self.state.cases) + 1:06d}"
                existing = {
                    "case_number": number, "step": "register", "seq": 1,
                    "at": dt.datetime.now(dt.UTC).isoformat(), "department": body.get("department"),
                    "deadline_at": (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat(),
                }
                self.state.cases[key] = existing
                self.state.created.append(key)
        return failure or JSONResponse(existing, status_code=201)

    async def _rate(self, request: Request) -> JSONResponse:
        if not self._authorised(request):
            return JSONResponse({"error": "unauthorised"}, status_code=401)
        key = request.headers.get("idempotency-key", "")
        body = json.loads(await request.body())
        with self.state.lock:
            self.state.requests.append((request.url.path, key))
        failure = await self._misbehave()
        if failure:
            return failure
        with self.state.lock:
            if key not in self.state.rated_keys:
                self.state.rated_keys.add(key)
                self.state.ratings.append((request.path_params["number"], int(body["score"])))
        return JSONResponse({"status": "ok"})
