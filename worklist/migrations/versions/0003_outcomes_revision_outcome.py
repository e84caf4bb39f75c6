"""revision outcome and per-output export errors

Revision ID: 0003_outcomes
Revises: 0002
Create Date: 2026-12-06 00:30:00

``study_revisions.outcome`` / ``outcome_detail``: what routing decided for a
ready revision (a job, no route matched and why, only own outputs).
``jobs.output_errors``: outputs the export could not build while the others
were kept and delivered.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_outcomes"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("study_revisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column(
            "outcome",
            sa.Enum("job", "no-route", "own-output", name="revision_outcome", native_enum=False, length=16),
            nullable=True,
        ))
        batch_op.add_column(sa.Column("outcome_detail", sa.String(length=200), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("output_errors", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("output_errors")
    with op.batch_alter_table("study_revisions", schema=None) as batch_op:
        batch_op.drop_column("outcome_detail")
        batch_op.drop_column("outcome")
