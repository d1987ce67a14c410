"""Console edits of the knowledge base: stored in kb_overrides, versioned, picked up by every process."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import record
from core.cases.service import next_counter
from core.models import Counter, Operator
from kb.models import KbOverride
from kb.search import Article, KnowledgeIndex, load_articles
from kb.service import KnowledgeBase, apply_overrides

KINDS = ("article", "routing", "template")
VERSION_COUNTER = "kb-version"


async def current_version(*, session: AsyncSession) -> int:
    """Return the edit counter; it changes whenever anything is edited."""
    return int(await session.scalar(select(Counter.value).where(Counter.name == VERSION_COUNTER)) or 0)


async def load_all(*, session: AsyncSession) -> dict[str, dict[str, dict[str, Any]]]:
    """Return kind → key → data of every live edit (deleted items carry `{"deleted": True}`)."""
    result: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
    for row in await session.scalars(select(KbOverride)):
        result.setdefault(row.kind, {})[row.key] = {"deleted": True} if row.deleted else dict(row.data)
    return result


async def save(
    *, session: AsyncSession, kind: str, key: str, data: dict[str, Any] | None, operator: Operator, ip: str | None,
) -> None:
    """Create, change or (with data=None) delete an item, audited, and bump the version."""
    if kind not in KINDS:
        raise ValueError(kind)
    row = await session.scalar(select(KbOverride).where(KbOverride.kind == kind, KbOverride.key == key))
    before = None if row is None else ({"deleted": True} if row.deleted else dict(row.data))
    if row is None:
        row = KbOverride(kind=kind, key=key)
        session.add(row)
    row.data = data or {}
    row.deleted = data is None
    row.updated_by = operator.id
    await record(session=session, operator=operator, action=f"kb.{kind}.{'delete' if data is None else 'save'}",
                 target_type=kind, target_id=key, details={"before": before, "after": data}, ip=ip)
    await next_counter(session=session, name=VERSION_COUNTER)


def merged_articles(overrides: dict[str, dict[str, Any]]) -> list[Article]:
    """Shipped articles with console edits applied (edited replace, deleted vanish, new are added)."""
    articles = {a.id: a for a in load_articles()}
    for key, data in overrides.items():
        if data.get("deleted"):
            articles.pop(key, None)
            continue
        articles[key] = Article(
            id=key, title=str(data.get("title", "")), category=str(data.get("category", "其他")),
            questions=tuple(data.get("questions") or ()), answer=str(data.get("answer", "")),
            keywords=tuple(data.get("keywords") or ()), handoff=data.get("handoff") or None,
        )
    return list(articles.values())


@dataclasses.dataclass(slots=True)
class LiveKnowledge:
    """The knowledge index and routing edits of this process, refreshed when the version changes."""

    kb: KnowledgeBase
    version: int = -1
    index: KnowledgeIndex | None = None
    templates: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    async def refresh(self, *, session: AsyncSession) -> KnowledgeIndex:
        """Rebuild from the database if another operator (in any process) edited something."""
        version = await current_version(session=session)
        if self.index is None or version != self.version:
            overrides = await load_all(session=session)
            apply_overrides(self.kb, overrides)
            self.index = KnowledgeIndex(merged_articles(overrides.get("article", {})))
            self.templates = overrides.get("template", {})
            self.version = version
        return self.index
