"""The typed application context built in the lifespan and handed to every request and job."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.bus import EventBus
from core.cases.notices import NoticeRouter
from core.outbox import OutboxWorker
from core.settings import Settings
from core.status import StatusRegistry
from core.workflow.ports import WorkflowClient
from kb.service import KnowledgeBase

if TYPE_CHECKING:
    from hotline.runtime import HotlineService
    from kb.overrides import LiveKnowledge
    from sms.service import SmsService
    from wechat.service import WeChatBot


def emit(session: AsyncSession, topic: str, data: dict[str, Any]) -> None:
    """Queue a live event that is published only once the session's transaction commits."""
    session.info.setdefault("events", []).append((topic, data))


@dataclass(slots=True)
class AppContext:
    """Long-lived clients and services of one app process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: EventBus
    outbox: OutboxWorker
    kb: KnowledgeBase
    workflow: WorkflowClient
    notices: NoticeRouter
    status: StatusRegistry
    templates: Jinja2Templates
    closers: list[Any] = field(default_factory=list)
    # Long-lived domain services, set by each domain's wiring (None until wired or when not configured).
    sms: SmsService | None = None
    wechat: WeChatBot | None = None
    hotline: HotlineService | None = None
    classifier: Any = None
    open311: Any = None
    knowledge: LiveKnowledge | None = None

    async def fresh_knowledge(self, session: AsyncSession) -> None:
        """Pick up knowledge-base and routing edits made by any process since the last look."""
        if self.knowledge is not None:
            await self.knowledge.refresh(session=session)

    @asynccontextmanager
    async def uow(self) -> AsyncIterator[AsyncSession]:
        """Run a unit of work: commit, then publish its live events and wake the outbox."""
        async with self.sessions() as session:
            async with session.begin():
                yield session
            events = session.info.pop("events", [])
            dirty = session.info.pop("outbox_dirty", False)
        for topic, data in events:
            await self.bus.publish(topic, data)
        if dirty:
            self.outbox.wake()
