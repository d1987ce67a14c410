"""hotline: call purposes, voicemail and callbacks, seat events, survey calls

Revision ID: c3a11f0e5d01
Revises: bd0c2be2a78b
Create Date: 2026-11-22 05:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c3a11f0e5d01"
down_revision: str | None = "bd0c2be2a78b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column(
            "purpose", sa.Enum("hotline", "callback", "survey", name="callpurpose", native_enum=False, length=32),
            nullable=False, server_default="hotline"))
        batch_op.add_column(sa.Column("voicemail_path", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("voicemail_reason", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("job_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("callback_for_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("callback_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("callback_by", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("restored", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False,
                                      server_default=sa.func.now()))
        batch_op.create_index(batch_op.f("ix_calls_job_id"), ["job_id"], unique=False)
        batch_op.create_index("ix_calls_missed", ["outcome", "callback_done"], unique=False)
        batch_op.create_foreign_key(batch_op.f("fk_calls_callback_for_id_calls"), "calls", ["callback_for_id"], ["id"],
                                    ondelete="SET NULL")
        batch_op.create_foreign_key(batch_op.f("fk_calls_callback_by_operators"), "operators", ["callback_by"],
                                    ["id"], ondelete="SET NULL")

    op.create_table(
        "seat_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=True),
        sa.Column("extension", sa.String(length=16), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("login", "logout", "pause", "resume", name="seateventkind", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["operator_id"], ["operators.id"], name=op.f("fk_seat_events_operator_id_operators"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_seat_events")),
    )
    with op.batch_alter_table("seat_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_seat_events_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_seat_events_operator_id"), ["operator_id"], unique=False)

    op.create_table(
        "survey_calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("citizen_id", sa.Integer(), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum("pending", "calling", "rated", "no_answer", "no_input", "failed", "skipped", name="surveystatus",
                    native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("digit", sa.String(length=8), nullable=True),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("needs_human_callback", sa.Boolean(), nullable=False),
        sa.Column("human_callback_done", sa.Boolean(), nullable=False),
        sa.Column("human_callback_by", sa.Integer(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name=op.f("fk_survey_calls_case_id_cases"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["citizen_id"], ["citizens.id"], name=op.f("fk_survey_calls_citizen_id_citizens"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["human_callback_by"], ["operators.id"],
                                name=op.f("fk_survey_calls_human_callback_by_operators"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_calls")),
        sa.UniqueConstraint("case_id", name=op.f("uq_survey_calls_case_id")),
        sa.UniqueConstraint("job_id", name=op.f("uq_survey_calls_job_id")),
    )
    with op.batch_alter_table("survey_calls", schema=None) as batch_op:
        batch_op.create_index("ix_survey_calls_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_survey_calls_needs_human_callback"), ["needs_human_callback"],
                              unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("survey_calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_survey_calls_needs_human_callback"))
        batch_op.drop_index("ix_survey_calls_due")
    op.drop_table("survey_calls")
    with op.batch_alter_table("seat_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_seat_events_operator_id"))
        batch_op.drop_index(batch_op.f("ix_seat_events_at"))
    op.drop_table("seat_events")
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_calls_callback_by_operators"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_calls_callback_for_id_calls"), type_="foreignkey")
        batch_op.drop_index("ix_calls_missed")
        batch_op.drop_index(batch_op.f("ix_calls_job_id"))
        batch_op.drop_column("updated_at")
        batch_op.drop_column("restored")
        batch_op.drop_column("callback_by")
        batch_op.drop_column("callback_at")
        batch_op.drop_column("callback_for_id")
        batch_op.drop_column("job_id")
        batch_op.drop_column("voicemail_reason")
        batch_op.drop_column("voicemail_path")
        batch_op.drop_column("purpose")
