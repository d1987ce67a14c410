"""Migrations build the schema the models describe, and go down and up again."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from core.db import Base
from core.migrate import downgrade, upgrade
from core.registry import import_all_models
from core.settings import Settings


def _diff(url: str) -> list[object]:
    import_all_models()

    async def _run() -> list[object]:
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
        await engine.dispose()
        return list(diff)

    return asyncio.run(_run())


def test_models_match_migrations(db_url: str) -> None:
    url = Settings(database_url=db_url).database_url
    assert _diff(url) == []


def test_downgrade_and_upgrade(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    downgrade(url, "base")
    upgrade(url)
    assert _diff(url) == []
