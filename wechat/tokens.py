"""The official account's access token, cached in one database row shared by every app process.

The stable-token endpoint returns the same token to every caller until it nears expiry, so processes
never invalidate each other; the row spares each process a call, the in-memory copy spares a query.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import utcnow
from wechat.models import AccessToken

log = logging.getLogger(__name__)

Fetch = Callable[..., Awaitable[tuple[str, int]]]
# WeChat allows a forced refresh at most every 30 s (and 20 a day).
FORCE_INTERVAL = dt.timedelta(seconds=30)


def dialect_insert(session: AsyncSession, table: Any) -> Any:
    """Return an INSERT with ON CONFLICT support for the session's database."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    return insert(table)


class SharedTokenStore:
    """Hands out the access token; refreshes it through `fetch` shortly before it expires."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], app_id: str, fetch: Fetch,
                 margin_seconds: int = 300) -> None:
        """Cache under `app_id`; `fetch(force=...)` calls the stable-token endpoint."""
        self._sessions = sessions
        self.app_id = app_id
        self._fetch = fetch
        self._margin = dt.timedelta(seconds=margin_seconds)
        self._cached: tuple[str, dt.datetime] | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    def _fresh(self, expires_at: dt.datetime, now: dt.datetime) -> bool:
        return expires_at - self._margin > now

    @property
    def expires_at(self) -> dt.datetime | None:
        """Expiry of the token this process holds."""
        return self._cached[1] if self._cached else None

    async def get(self) -> str:
        """Return a token valid for at least the margin."""
        now = utcnow()
        if self._cached and self._fresh(self._cached[1], now):
            return self._cached[0]
        async with self._lock:
            if self._cached and self._fresh(self._cached[1], now):
                return self._cached[0]
            row = await self._row()
            if row is not None and self._fresh(row.expires_at, now):
                self._cached = (row.token, row.expires_at)
                return row.token
            return await self._refresh(force=False)

    async def invalidate(self, token: str) -> None:
        """WeChat rejected `token`: take a newer one from the row, else refetch, forcing only if needed."""
        async with self._lock:
            if self._cached and self._cached[0] == token:
                self._cached = None
            row = await self._row()
            now = utcnow()
            if row is not None and row.token != token and self._fresh(row.expires_at, now):
                self._cached = (row.token, row.expires_at)
                return
            fresh = await self._refresh(force=False)
            if fresh != token:
                return
            if row is not None and row.forced_at is not None and now - row.forced_at < FORCE_INTERVAL:
                log.warning("wechat token rejected again within 30 s of a forced refresh; not forcing")
                return
            await self._refresh(force=True)

    async def _row(self) -> AccessToken | None:
        async with self._sessions() as session:
            return await session.scalar(select(AccessToken).where(AccessToken.app_id == self.app_id))

    async def _refresh(self, *, force: bool) -> str:
        token, expires_in = await self._fetch(force=force)
        self.fetches += 1
        now = utcnow()
        expires_at = now + dt.timedelta(seconds=max(expires_in, 60))
        values: dict[str, Any] = {"token": token, "expires_at": expires_at, "refreshed_at": now}
        if force:
            values["forced_at"] = now
        async with self._sessions() as session, session.begin():
            stmt = dialect_insert(session, AccessToken).values(app_id=self.app_id, **values)
            await session.execute(stmt.on_conflict_do_update(index_elements=["app_id"], set_=values))
        self._cached = (token, expires_at)
        log.info("wechat access token refreshed%s; valid %d s", " (forced)" if force else "", expires_in)
        return token
