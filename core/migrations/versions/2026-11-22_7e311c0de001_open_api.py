"""open intake API: API clients, requests received, alarm incidents, webhook deliveries, rate counters

Revision ID: 7e311c0de001
Revises: b2c0de5e0002
Create Date: 2026-11-22 05:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "7e311c0de001"
down_revision: str | None = "b2c0de5e0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "open311_clients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("contact", sa.String(length=255), nullable=True),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "scopes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("rate_per_minute", sa.Integer(), nullable=False),
        sa.Column("quota_per_day", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("signing_secret", sa.String(length=128), nullable=False),
        sa.Column("webhook_url", sa.String(length=1024), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_open311_clients")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_open311_clients_key_hash")),
        sa.UniqueConstraint("name", name=op.f("uq_open311_clients_name")),
    )
    op.create_table(
        "open311_rate_counters",
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("window", sa.String(length=16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["open311_clients.id"],
            name=op.f("fk_open311_rate_counters_client_id_open311_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", "window", name=op.f("pk_open311_rate_counters")),
    )
    op.create_table(
        "open311_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("open311", "12345", "alarm", name="requestkind", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("draft_id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("service_code", sa.String(length=8), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "attributes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("email", sa.String(length=255), nullable=True),
        sa.Column("first_name", sa.String(length=64), nullable=True),
        sa.Column("last_name", sa.String(length=64), nullable=True),
        sa.Column("device_id", sa.String(length=128), nullable=True),
        sa.Column("account_id", sa.String(length=128), nullable=True),
        sa.Column("external_category", sa.String(length=128), nullable=True),
        sa.Column("callback_url", sa.String(length=1024), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "seen_draft_status",
            sa.Enum(
                "draft",
                "pending_review",
                "accepted",
                "rejected",
                "merged",
                "answered",
                name="draftstatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["open311_clients.id"], name=op.f("fk_open311_requests_client_id_open311_clients")
        ),
        sa.ForeignKeyConstraint(
            ["draft_id"],
            ["draft_cases.id"],
            name=op.f("fk_open311_requests_draft_id_draft_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_open311_requests")),
        sa.UniqueConstraint(
            "client_id", "kind", "external_id", name=op.f("uq_open311_requests_client_id_kind_external_id")
        ),
        sa.UniqueConstraint("draft_id", name=op.f("uq_open311_requests_draft_id")),
        sa.UniqueConstraint("public_id", name=op.f("uq_open311_requests_public_id")),
    )
    with op.batch_alter_table("open311_requests", schema=None) as batch_op:
        batch_op.create_index("ix_open311_requests_client_created", ["client_id", "created_at"], unique=False)

    op.create_table(
        "open311_alarm_incidents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("alarm_key", sa.String(length=64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("alarm_type", sa.String(length=64), nullable=False),
        sa.Column("place", sa.String(length=255), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_value", sa.String(length=64), nullable=True),
        sa.Column("unit", sa.String(length=16), nullable=True),
        sa.Column("level", sa.String(length=16), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["open311_clients.id"],
            name=op.f("fk_open311_alarm_incidents_client_id_open311_clients"),
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["open311_requests.id"],
            name=op.f("fk_open311_alarm_incidents_request_id_open311_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_open311_alarm_incidents")),
        sa.UniqueConstraint(
            "client_id",
            "alarm_key",
            "generation",
            name=op.f("uq_open311_alarm_incidents_client_id_alarm_key_generation"),
        ),
        sa.UniqueConstraint("request_id", name=op.f("uq_open311_alarm_incidents_request_id")),
    )
    op.create_table(
        "open311_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=128), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=1024), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum("pending", "delivered", "failed", name="deliverystatus", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["open311_clients.id"],
            name=op.f("fk_open311_deliveries_client_id_open311_clients"),
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["open311_requests.id"],
            name=op.f("fk_open311_deliveries_request_id_open311_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_open311_deliveries")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_open311_deliveries_dedupe_key")),
    )
    with op.batch_alter_table("open311_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_open311_deliveries_client_created", ["client_id", "created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_open311_deliveries_request_id"), ["request_id"], unique=False)

    op.create_table(
        "open311_delivery_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=255), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["open311_deliveries.id"],
            name=op.f("fk_open311_delivery_attempts_delivery_id_open311_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_open311_delivery_attempts")),
    )
    with op.batch_alter_table("open311_delivery_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_open311_delivery_attempts_delivery_id"), ["delivery_id"], unique=False
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("open311_delivery_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_open311_delivery_attempts_delivery_id"))

    op.drop_table("open311_delivery_attempts")
    with op.batch_alter_table("open311_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_open311_deliveries_request_id"))
        batch_op.drop_index("ix_open311_deliveries_client_created")

    op.drop_table("open311_deliveries")
    op.drop_table("open311_alarm_incidents")
    with op.batch_alter_table("open311_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_open311_requests_client_created")

    op.drop_table("open311_requests")
    op.drop_table("open311_rate_counters")
    op.drop_table("open311_clients")
