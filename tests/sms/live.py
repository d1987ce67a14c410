"""The app served by uvicorn on a real port (Kannel must reach our callbacks over HTTP), driven from the test."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import uvicorn

from core.app import create_app
from core.context import AppContext
from core.models import Role
from core.security import create_operator
from core.settings import Settings
from tests.conftest import PASSWORD


class LiveApp:
    """uvicorn in a thread with its own event loop; `run()` executes a coroutine in that loop."""

    def __init__(self, settings: Settings, port: int) -> None:
        """Prepare the server; call start()."""
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.server.serve(),),
                                       daemon=True)
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self.csrf = ""

    def start(self) -> LiveApp:
        """Serve, wait until started, log an admin in."""
        self.thread.start()
        end = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > end or not self.thread.is_alive():
                raise RuntimeError("live app did not start")
            time.sleep(0.05)

        async def _admin() -> None:
            async with self.ctx.uow() as session:
                await create_operator(session=session, username="admin", password=PASSWORD, role=Role.ADMIN)

        self.run(_admin)
        response = self.http.post("/api/session", json={"username": "admin", "password": PASSWORD})
        assert response.status_code == 200, response.text
        self.csrf = response.json()["csrf_token"]
        return self

    @property
    def ctx(self) -> AppContext:
        """The app context built by the lifespan."""
        ctx: AppContext = self.server.lifespan.state["ctx"]
        return ctx

    def run(self, coro_fn: Callable[..., Any], *args: Any) -> Any:
        """Run a coroutine in the app's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro_fn(*args), self.loop).result(timeout=60)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """POST with the session's CSRF token."""
        return self.http.post(url, headers={"X-CSRF-Token": self.csrf, **kwargs.pop("headers", {})}, **kwargs)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """GET."""
        return self.http.get(url, **kwargs)

    def stop(self) -> None:
        """Shut the server down (lifespan closers run)."""
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.http.close()


def wait_until(predicate: Callable[[], bool], *, seconds: float = 20.0, what: str = "condition") -> None:
    """Poll until the predicate holds."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
