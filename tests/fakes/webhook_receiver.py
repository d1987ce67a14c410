"""A real local HTTP receiver for webhooks and 12345 result callbacks, with fault injection."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.workflow.http import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from tests.fakes.workflow_platform import free_port


@dataclass
class Received:
    """One POST as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    def signed_by(self, secret: str) -> bool:
        return verify_signature(secret, timestamp=self.headers.get(TIMESTAMP_HEADER.lower()),
                                signature=self.headers.get(SIGNATURE_HEADER.lower()), body=self.body)


@dataclass
class ReceiverState:
    """What arrived and how to answer."""

    received: list[Received] = field(default_factory=list)
    fail_next: int = 0
    fail_status: int = 503
    always_status: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class WebhookReceiver:
    """Accepts POSTs on any path in a background thread; answers 200 unless told to fail."""

    def __init__(self) -> None:
        """Prepare the app; call start()."""
        self.state = ReceiverState()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[Route("/{path:path}", self._receive, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> WebhookReceiver:
        """Start serving and wait until the port answers."""
        self._thread.start()
        for _ in range(100):
            if self._server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("webhook receiver did not start")

    def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        self._thread.join(timeout=5)

    async def _receive(self, request: Request) -> JSONResponse:
        body = await request.body()
        with self.state.lock:
            status = 200
            if self.state.always_status is not None:
                status = self.state.always_status
            elif self.state.fail_next > 0:
                self.state.fail_next -= 1
                status = self.state.fail_status
            self.state.received.append(Received(request.url.path, {k.lower(): v for k, v in request.headers.items()},
                                                body, status))
        return JSONResponse({"ok": status < 300}, status_code=status)

    @property
    def accepted(self) -> list[Received]:
        """The POSTs answered with 2xx."""
        with self.state.lock:
            return [r for r in self.state.received if r.answered < 300]

    @property
    def received(self) -> list[Received]:
        """Every POST, answered or refused."""
        with self.state.lock:
            return list(self.state.received)
