"""sms gateways: sends with parts and receipts, recipients with opt-outs

Revision ID: c5a1e7d20b44
Revises: c3a11f0e5d01
Create Date: 2026-11-22 06:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c5a1e7d20b44"
down_revision: str | None = "c3a11f0e5d01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SMS_STATUS = ("pending", "submitting", "submitted", "delivered", "failed", "skipped")


def _status() -> sa.Enum:
    return sa.Enum(*SMS_STATUS, name="smsstatus", native_enum=False, length=32)


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "sms_recipients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opt_out_via", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_recipients")),
        sa.UniqueConstraint("phone", name=op.f("uq_sms_recipients_phone")),
    )
    op.create_table(
        "sms_sends",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("notification_id", sa.Integer(), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("template", sa.String(length=32), nullable=False),
        sa.Column(
            "params",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("parts", sa.Integer(), nullable=False),
        sa.Column("urgent", sa.Boolean(), nullable=False),
        sa.Column("ignore_opt_out", sa.Boolean(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=True),
        sa.Column("status", _status(), nullable=False),
        sa.Column("provider_message_id", sa.String(length=128), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("deferrals", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("defer_reason", sa.String(length=32), nullable=True),
        sa.Column("error", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempt_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_sms_sends_notification_id_notifications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_sends")),
        sa.UniqueConstraint("key", name=op.f("uq_sms_sends_key")),
        sa.UniqueConstraint("reference", name=op.f("uq_sms_sends_reference")),
    )
    with op.batch_alter_table("sms_sends", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sms_sends_notification_id"), ["notification_id"], unique=False)
        batch_op.create_index("ix_sms_sends_phone_sent", ["phone", "sent_at"], unique=False)

    op.create_table(
        "sms_parts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("send_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("provider_message_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("status", _status(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["send_id"], ["sms_sends.id"], name=op.f("fk_sms_parts_send_id_sms_sends"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_parts")),
        sa.UniqueConstraint("provider", "provider_message_id", name=op.f("uq_sms_parts_provider_provider_message_id")),
    )
    with op.batch_alter_table("sms_parts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sms_parts_send_id"), ["send_id"], unique=False)

    op.create_table(
        "sms_receipts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("provider_message_id", sa.String(length=128), nullable=False),
        sa.Column("reference", sa.String(length=128), nullable=True),
        sa.Column("send_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["send_id"], ["sms_sends.id"], name=op.f("fk_sms_receipts_send_id_sms_sends"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_receipts")),
        sa.UniqueConstraint("provider", "provider_message_id", "outcome", name=op.f("uq_sms_receipts_provider_provider_message_id_outcome")),
    )
    with op.batch_alter_table("sms_receipts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sms_receipts_reference"), ["reference"], unique=False)
        batch_op.create_index(batch_op.f("ix_sms_receipts_send_id"), ["send_id"], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("sms_receipts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sms_receipts_send_id"))
        batch_op.drop_index(batch_op.f("ix_sms_receipts_reference"))

    op.drop_table("sms_receipts")
    with op.batch_alter_table("sms_parts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sms_parts_send_id"))

    op.drop_table("sms_parts")
    with op.batch_alter_table("sms_sends", schema=None) as batch_op:
        batch_op.drop_index("ix_sms_sends_phone_sent")
        batch_op.drop_index(batch_op.f("ix_sms_sends_notification_id"))

    op.drop_table("sms_sends")
    op.drop_table("sms_recipients")
