"""study index

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 14:54:54.120957
"""

import sqlalchemy as sa
from alembic import op

import worklist.db

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('patients',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('issuer_of_patient_id', sa.String(length=64), nullable=False),
    sa.Column('patients_name', sa.String(length=324), nullable=False),
    sa.Column('patients_birth_date', sa.String(length=8), nullable=False),
    sa.Column('patients_sex', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_patients')),
    sa.UniqueConstraint('patient_id', 'issuer_of_patient_id', name=op.f('uq_patients_patient_id'))
    )
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("study_date", sa.String(length=8), nullable=False),
        sa.Column("study_time", sa.String(length=16), nullable=False),
        sa.Column("accession_number", sa.String(length=16), nullable=False),
        sa.Column("study_description", sa.String(length=64), nullable=False),
        sa.Column("current_revision", sa.Integer(), nullable=False),
        sa.Column("instance_count", sa.Integer(), nullable=False),
        sa.Column("first_received_at", worklist.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_received_at", worklist.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_pk"], ["patients.id"], name=op.f("fk_studies_patient_pk_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
        sa.UniqueConstraint("study_instance_uid", name=op.f("uq_studies_study_instance_uid")),
    )
    op.create_table('series',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('series_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('study_pk', sa.Integer(), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=False),
    sa.Column('series_number', sa.Integer(), nullable=True),
    sa.Column('series_description', sa.String(length=64), nullable=False),
    sa.Column('body_part_examined', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['study_pk'], ['studies.id'], name=op.f('fk_series_study_pk_studies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_series')),
    sa.UniqueConstraint('series_instance_uid', name=op.f('uq_series_series_instance_uid'))
    )
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_series_study_pk'), ['study_pk'], unique=False)

    op.create_table(
        "study_revisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column(
            "state",
            sa.Enum("receiving", "ready", name="revision_state", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("opened_at", worklist.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_received_at", worklist.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("instances_received", sa.Integer(), nullable=False),
        sa.Column("ready_at", worklist.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ready_reason", sa.String(length=16), nullable=True),
        sa.Column("dispatch_claimed_at", worklist.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("dispatched_at", worklist.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["study_pk"], ["studies.id"], name=op.f("fk_study_revisions_study_pk_studies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study_revisions")),
        sa.UniqueConstraint("study_pk", "revision", name=op.f("uq_study_revisions_study_pk")),
    )
    with op.batch_alter_table('study_revisions', schema=None) as batch_op:
        batch_op.create_index(
            "ix_study_revisions_state_last_received_at", ["state", "last_received_at"], unique=False
        )

    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_pk", sa.Integer(), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.String(length=256), nullable=False),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=False),
        sa.Column("received_at", worklist.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_pk"], ["series.id"], name=op.f("fk_instances_series_pk_series")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_instances_sop_instance_uid")),
    )
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instances_series_pk'), ['series_pk'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_series_pk'))

    op.drop_table('instances')
    with op.batch_alter_table('study_revisions', schema=None) as batch_op:
        batch_op.drop_index('ix_study_revisions_state_last_received_at')

    op.drop_table('study_revisions')
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_series_study_pk'))

    op.drop_table('series')
    op.drop_table('studies')
    op.drop_table('patients')
