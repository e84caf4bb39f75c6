"""job leases: the worker running an inference attempt and until when its claim holds

Revision ID: 0003_workers
Revises: 0003_outcomes
"""

import sqlalchemy as sa
from alembic import op

import worklist.db

revision = "0003_workers"
down_revision = "0003_outcomes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worker", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", worklist.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("worker")
