"""online loop: turns.arm, loop_state, loop_events

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Turns answered before canaries existed belong to no arm (NULL).
    with op.batch_alter_table("turns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("arm", sa.String(length=16), nullable=True))
    op.create_table(
        "loop_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.Column("train_requested", sa.Boolean(), nullable=False),
        sa.Column("signals_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("round_id", sa.String(length=64), nullable=True),
        sa.Column("round_status", sa.String(length=16), nullable=True),
        sa.Column("round_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("round_finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("round_message", sa.Text(), nullable=True),
        sa.Column("next_round_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("holder", sa.String(length=256), nullable=True),
        sa.Column("lock_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "loop_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=256), nullable=True),
        sa.Column("actor", sa.String(length=160), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("loop_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_loop_events_at"), ["at"], unique=False)


def downgrade() -> None:
    op.drop_table("loop_events")
    op.drop_table("loop_state")
    with op.batch_alter_table("turns", schema=None) as batch_op:
        batch_op.drop_column("arm")
