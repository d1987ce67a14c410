"""Two deliveries of one report racing through intake give one draft, never two and never an error."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.cases.models import DraftCase
from core.cases.schemas import DraftCreate
from core.cases.service import create_draft
from core.db import make_engine, make_sessionmaker
from kb.service import KnowledgeBase
from tests.conftest import make_settings


async def test_racing_deliveries_of_one_report_make_one_draft(db_url: str, tmp_path: Path) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite serialises writers; the race needs concurrent transactions")
    engine = make_engine(make_settings(db_url, tmp_path))
    maker = make_sessionmaker(engine)
    kb = KnowledgeBase.load()
    data = DraftCreate(channel="api", text="人行道井盖丢了", source_key="order-42")
    first_inserted = asyncio.Event()

    async def first() -> int:
        async with maker() as session, session.begin():
            draft = await create_draft(session=session, data=data, kb=kb)
            first_inserted.set()
            # Hold the transaction open so the second delivery runs into the uncommitted row.
            await asyncio.sleep(0.3)
            return draft.id

    async def second() -> int:
        await first_inserted.wait()
        async with maker() as session, session.begin():
            draft = await create_draft(session=session, data=data, kb=kb)
            return draft.id

    try:
        a, b = await asyncio.gather(first(), second())
        assert a == b
        async with maker() as session:
            assert await session.scalar(select(func.count()).select_from(DraftCase)) == 1
    finally:
        await engine.dispose()
