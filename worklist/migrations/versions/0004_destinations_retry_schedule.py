"""delivery retry schedule bounded by time, and what a partial failure left to send

Revision ID: 0004_destinations
Revises: 0003_workers

``deliveries.retry_until``: retries of a failing delivery stop at this time (its first
failure plus the destination's ``retry_for``); ``next_attempt_at`` (already there) is
when the next one is due. ``deliveries.remaining_objects``: the object UIDs a partial
STOW-RS failure left to send. An index on (state, next_attempt_at) serves the sweeper.
"""

import sqlalchemy as sa
from alembic import op

import worklist.db

revision = "0004_destinations"
down_revision = "0003_workers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("retry_until", worklist.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("remaining_objects", sa.Text(), nullable=True))
        batch_op.create_index(
            "ix_deliveries_state_next_attempt_at", ["state", "next_attempt_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_state_next_attempt_at")
        batch_op.drop_column("remaining_objects")
        batch_op.drop_column("retry_until")
