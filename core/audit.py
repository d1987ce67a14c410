"""Audit log writes, inside the transaction of the change they describe."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.models import AuditEntry, Operator


async def record(
    *,
    session: AsyncSession,
    operator: Operator | None,
    action: str,
    target_type: str | None = None,
    target_id: str | None = None,
    details: dict[str, Any] | None = None,
    ip: str | None = None,
    actor: str | None = None,
) -> None:
    """Add an audit entry; callers pass masked values only, never a full phone number or openid."""
    session.add(
        AuditEntry(
            operator_id=operator.id if operator else None,
            actor=actor or (operator.username if operator else "system"),
            action=action,
            target_type=target_type,
            target_id=target_id,
            details=details or {},
            ip=ip,
        )
    )
