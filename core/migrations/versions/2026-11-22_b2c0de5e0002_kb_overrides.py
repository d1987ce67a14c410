"""kb overrides: console edits of articles, routing and notice templates

Revision ID: b2c0de5e0002
Revises: a1c0de5e0001
Create Date: 2026-11-22 05:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "b2c0de5e0002"
down_revision: str | None = "a1c0de5e0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "kb_overrides",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("data", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                  nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_by", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["updated_by"], ["operators.id"], name=op.f("fk_kb_overrides_updated_by_operators"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_overrides")),
        sa.UniqueConstraint("kind", "key", name=op.f("uq_kb_overrides_kind_key")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("kb_overrides")
