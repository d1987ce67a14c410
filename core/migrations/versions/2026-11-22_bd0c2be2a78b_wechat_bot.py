"""wechat bot: conversations, media, shared access token, plaintext-mode nonces

Revision ID: bd0c2be2a78b
Revises: 7e311c0de001
Create Date: 2026-11-22 06:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "bd0c2be2a78b"
down_revision: str | None = "7e311c0de001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "wechat_conversations",
        sa.Column("openid", sa.String(length=64), nullable=False),
        sa.Column("citizen_id", sa.Integer(), nullable=True),
        sa.Column(
            "step",
            sa.Enum(
                "idle",
                "describe",
                "photos",
                "location",
                "confirm",
                "edit",
                "rating_comment",
                "bind_phone",
                "bind_code",
                name="conversationstep",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("recent", JSON, nullable=False),
        sa.Column("step_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["citizen_id"],
            ["citizens.id"],
            name=op.f("fk_wechat_conversations_citizen_id_citizens"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("openid", name=op.f("pk_wechat_conversations")),
    )
    with op.batch_alter_table("wechat_conversations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_wechat_conversations_citizen_id"), ["citizen_id"], unique=False)

    op.create_table(
        "wechat_media",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_key", sa.String(length=128), nullable=False),
        sa.Column("openid", sa.String(length=64), nullable=False),
        sa.Column("media_id", sa.String(length=256), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column(
            "status",
            sa.Enum("pending", "stored", "failed", name="mediastatus", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("storage_key", sa.String(length=255), nullable=True),
        sa.Column("mime", sa.String(length=64), nullable=True),
        sa.Column("size", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=255), nullable=True),
        sa.Column("draft_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["draft_id"], ["draft_cases.id"], name=op.f("fk_wechat_media_draft_id_draft_cases"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wechat_media")),
        sa.UniqueConstraint("source_key", name=op.f("uq_wechat_media_source_key")),
    )
    with op.batch_alter_table("wechat_media", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_wechat_media_draft_id"), ["draft_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_wechat_media_openid"), ["openid"], unique=False)

    op.create_table(
        "wechat_tokens",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("token", sa.String(length=1024), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("forced_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("app_id", name=op.f("pk_wechat_tokens")),
    )

    op.create_table(
        "wechat_nonces",
        sa.Column("key", sa.String(length=96), nullable=False),
        sa.Column("body_sha", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_wechat_nonces")),
    )
    with op.batch_alter_table("wechat_nonces", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_wechat_nonces_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("wechat_nonces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_wechat_nonces_created_at"))
    op.drop_table("wechat_nonces")
    op.drop_table("wechat_tokens")
    with op.batch_alter_table("wechat_media", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_wechat_media_openid"))
        batch_op.drop_index(batch_op.f("ix_wechat_media_draft_id"))
    op.drop_table("wechat_media")
    with op.batch_alter_table("wechat_conversations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_wechat_conversations_citizen_id"))
    op.drop_table("wechat_conversations")
