"""draft autosave: the operator's form state on a draft

Revision ID: a1c0de5e0001
Revises: 6d4f1694bedd
Create Date: 2026-11-22 05:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "a1c0de5e0001"
down_revision: str | None = "6d4f1694bedd"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("draft_cases", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "form_state",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("form_saved_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("draft_cases", schema=None) as batch_op:
        batch_op.drop_column("form_saved_at")
        batch_op.drop_column("form_state")
