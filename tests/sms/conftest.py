"""SMS test fixtures: SMS tables emptied between PostgreSQL tests, apps on each gateway, a live app for Kannel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.app import create_app
from core.settings import Settings
from sms.kannel_box import kannel_installed
from tests.conftest import Api, _unavailable, create_operator_sync, make_settings

SMS_TABLES = ("sms_receipts", "sms_parts", "sms_sends", "sms_recipients")
CALLBACK_TOKEN = "cb-token-0123456789abcdef"


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker of tests that drive Debian's Kannel."""
    config.addinivalue_line(
        "markers", "kannel: needs Debian's kannel + kannel-extras (fails when INTAKE_TEST_REQUIRE_SERVICES=1)")


@pytest.fixture
def db_url(db_url: str) -> str:
    """The shared clean database, with the SMS tables emptied too (the root fixture does not know them)."""
    if db_url.startswith("postgresql"):
        async def _truncate() -> None:
            import asyncpg

            conn = await asyncpg.connect(db_url)
            try:
                await conn.execute(f"TRUNCATE {', '.join(SMS_TABLES)} RESTART IDENTITY CASCADE")
            finally:
                await conn.close()

        asyncio.run(_truncate())
    return db_url


@pytest.fixture
def kannel() -> None:
    """Require Debian's Kannel: a loud failure in CI, a skip on a developer machine without it."""
    if not kannel_installed():
        _unavailable("Kannel (apt-get install kannel kannel-extras)", FileNotFoundError("/usr/sbin/bearerbox"))


def sms_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Test settings with callbacks enabled."""
    values: dict[str, Any] = {"sms_callback_token": CALLBACK_TOKEN}
    values.update(overrides)
    return make_settings(db_url, tmp_path, **values)


@contextmanager
def running_api(settings: Settings) -> Iterator[Api]:
    """The app on these settings with an admin logged in."""
    with TestClient(create_app(settings)) as client:
        api = Api(client)
        create_operator_sync(api, "admin")
        yield api.login()


@pytest.fixture
def make_api(db_url: str, tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """Start the app with SMS setting overrides (closed at the end of the test)."""
    stack: list[Any] = []

    def _make(**overrides: Any) -> Api:
        manager = running_api(sms_settings(db_url, tmp_path, **overrides))
        stack.append(manager)
        return manager.__enter__()

    yield _make
    for manager in reversed(stack):
        manager.__exit__(None, None, None)
