"""Knowledge-base wiring: the live index of consultation articles and routing edits."""

from __future__ import annotations

from core.context import AppContext
from kb.overrides import LiveKnowledge


def wire(ctx: AppContext) -> None:
    """Attach the live knowledge holder (built lazily on first use: jieba loads its dictionary once)."""
    ctx.knowledge = LiveKnowledge(ctx.kb)
