"""Knowledge-base API for seats and other channels: case types, consultation search."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from core.deps import Ctx, CurrentLogin

router = APIRouter(prefix="/api/kb", tags=["knowledge"])


@router.get("/case-types")
async def case_types(ctx: Ctx, login: CurrentLogin) -> list[dict[str, Any]]:
    """The taxonomy in use, with each type's time limit and default department."""
    result = []
    for t in sorted(ctx.kb.taxonomy.types.values(), key=lambda t: t.code):
        limit = ctx.kb.limits.limit_for(t)
        result.append({"code": t.code, "name": t.name, "major_code": t.major_code, "major_name": t.major_name,
                       "group": t.group, "time_limit": limit.label,
                       "department": ctx.kb.routing.department_name(ctx.kb.routing.department_for(t))})
    return result


@router.get("/search")
async def search(ctx: Ctx, login: CurrentLogin, q: Annotated[str, Query(min_length=1, max_length=200)],
                 limit: Annotated[int, Query(ge=1, le=20)] = 5) -> list[dict[str, Any]]:
    """The best consultation articles for a citizen's question."""
    assert ctx.knowledge is not None
    async with ctx.sessions() as session:
        index = await ctx.knowledge.refresh(session=session)
    return [{"id": h.article.id, "title": h.article.title, "category": h.article.category,
             "answer": h.article.answer, "handoff": h.article.handoff, "score": round(h.score, 3)}
            for h in index.search(q, limit=limit)]
