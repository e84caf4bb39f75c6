"""jobs artifacts deliveries audit

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 15:17:23.746055
"""

import sqlalchemy as sa
from alembic import op

import worklist.db

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("route", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "queued",
                "inferring",
                "exporting",
                "delivering",
                "done",
                "failed",
                "dead",
                name="job_state",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("inference_starts", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("created_at", worklist.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", worklist.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("enqueued_at", worklist.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("inference_started_at", worklist.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("inference_seconds", sa.Double(), nullable=True),
        sa.Column("export_seconds", sa.Double(), nullable=True),
        sa.Column("finished_at", worklist.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("report_json", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["study_pk"], ["studies.id"], name=op.f("fk_jobs_study_pk_studies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("study_pk", "revision", "route", name=op.f("uq_jobs_study_pk")),
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_state_updated_at', ['state', 'updated_at'], unique=False)

    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("object_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=True),
        sa.Column("path", sa.String(length=256), nullable=False),
        sa.Column("created_at", worklist.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_artifacts_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint(
            "job_id", "kind", "language", "object_uid", name=op.f("uq_artifacts_job_id")
        ),
    )
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_artifacts_job_id'), ['job_id'], unique=False)
        batch_op.create_index(
            batch_op.f("ix_artifacts_series_instance_uid"), ["series_instance_uid"], unique=False
        )

    op.create_table('audit_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', worklist.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_audit_events_job_id_jobs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_job_id'), ['job_id'], unique=False)

    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("protocol", sa.String(length=8), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "pending", "done", "failed", name="delivery_state", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", worklist.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("operation_outcome", sa.Text(), nullable=True),
        sa.Column("delivered_at", worklist.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_deliveries_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("job_id", "destination", name=op.f("uq_deliveries_job_id")),
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deliveries_job_id'), ['job_id'], unique=False)

    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("is_own_output", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('is_own_output')

    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deliveries_job_id'))

    op.drop_table('deliveries')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_job_id'))
        batch_op.drop_index(batch_op.f('ix_audit_events_at'))

    op.drop_table('audit_events')
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_artifacts_series_instance_uid'))
        batch_op.drop_index(batch_op.f('ix_artifacts_job_id'))

    op.drop_table('artifacts')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_state_updated_at')

    op.drop_table('jobs')
