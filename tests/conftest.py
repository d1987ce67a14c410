"""Shared fixtures: a migrated database on SQLite and on the local PostgreSQL, the app, logged-in clients."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.app import create_app
from core.context import AppContext
from core.migrate import upgrade
from core.settings import Settings

PG_ADMIN_URL = os.environ.get("INTAKE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("INTAKE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = os.environ.get("INTAKE_TEST_REQUIRE_SERVICES") == "1"
PASSWORD = "correct-horse-battery"


def _unavailable(what: str, err: Exception) -> None:
    # In CI (`make test`) a missing service is a failure, never a silent skip.
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required but unavailable: {err}")
    pytest.skip(f"{what} unavailable: {err}")


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for the whole run."""
    name = f"intake_test_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as err:  # noqa: BLE001
        _unavailable("PostgreSQL", err)
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    upgrade(Settings(database_url=url).database_url)
    yield url
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (migrating once keeps the suite fast)."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


def _all_tables() -> tuple[str, ...]:
    """Every table the models declare, so a new domain's tables are truncated too."""
    from core.db import Base
    from core.registry import import_all_models

    import_all_models()
    return tuple(sorted(Base.metadata.tables))


TABLES = _all_tables()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Database URL of a clean, migrated database, once per backend."""
    if request.param == "sqlite":
        target = tmp_path / "intake.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("pg_database")
    admin = url.replace("postgresql://", "postgresql://", 1)

    async def _truncate() -> None:
        import asyncpg

        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
        finally:
            await conn.close()

    asyncio.run(_truncate())
    return url


def make_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Test settings: given database, files under tmp_path, no background worker unless asked."""
    values: dict[str, Any] = {
        "env": "test",
        "database_url": db_url,
        "var_dir": tmp_path / "var",
        "outbox_worker": False,
        "outbox_backoff_base_seconds": 0.05,
        "outbox_backoff_max_seconds": 0.2,
        "department_api_token": "dept-token",
        "workflow_webhook_secret": "hook-secret",
        "workflow_api_key": "platform-key",
    }
    values.update(overrides)
    return Settings(**values)


class Api:
    """A logged-in test client with helpers."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.csrf = ""

    @property
    def ctx(self) -> AppContext:
        ctx: AppContext = self.client.app_state["ctx"]
        return ctx

    def login(self, username: str = "admin", password: str = PASSWORD) -> Api:
        response = self.client.post("/api/session", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        self.csrf = response.json()["csrf_token"]
        return self

    def post(self, url: str, **kwargs: Any) -> Any:
        headers = {"X-CSRF-Token": self.csrf, **kwargs.pop("headers", {})}
        return self.client.post(url, headers=headers, **kwargs)

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.client.get(url, **kwargs)

    def drain(self) -> None:
        """Deliver every due outbox job now, in the app's own event loop."""
        self.client.portal.call(self.ctx.outbox.drain)  # type: ignore[union-attr]

    def step(self) -> int:
        """Run one outbox batch (for tests where the peer keeps failing)."""
        return int(self.client.portal.call(self.ctx.outbox.run_once))  # type: ignore[union-attr]

    def run(self, coro_fn: Any, *args: Any) -> Any:
        return self.client.portal.call(coro_fn, *args)  # type: ignore[union-attr]


def create_operator_sync(api: Api, username: str, role: str = "admin", extension: str | None = None) -> None:
    """Create an operator through the service layer."""
    from core.models import Role
    from core.security import create_operator

    async def _create() -> None:
        async with api.ctx.uow() as session:
            await create_operator(session=session, username=username, password=PASSWORD, role=Role(role),
                                  extension=extension)

    api.run(_create)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings for the app under test."""
    return make_settings(db_url, tmp_path)


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    """The app with an admin logged in."""
    with TestClient(create_app(settings)) as client:
        api = Api(client)
        create_operator_sync(api, "admin")
        yield api.login()
