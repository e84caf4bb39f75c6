"""indexes for the read views (worklist.views): lists newest first, filters, a day's counts

Revision ID: 0006_views
Revises: 0005_accounts

Studies are listed by ``last_received_at`` and filtered by a series' modality or an
instance's calling AE title; jobs are listed by ``created_at`` (alone, or after a state or
route) and counted per day by ``finished_at``; revisions are counted per day by
``opened_at``, and those ready but not dispatched by ``dispatched_at``.
"""

from alembic import op

revision = "0006_views"
down_revision = "0005_accounts"
branch_labels = None
depends_on = None

#: (table, index, columns)
_INDEXES = (
    ("studies", "ix_studies_last_received_at", ["last_received_at"]),
    ("study_revisions", "ix_study_revisions_opened_at", ["opened_at"]),
    ("study_revisions", "ix_study_revisions_dispatched_at", ["dispatched_at"]),
    ("series", "ix_series_modality_study_pk", ["modality", "study_pk"]),
    ("instances", "ix_instances_calling_ae_title_series_pk", ["calling_ae_title", "series_pk"]),
    ("jobs", "ix_jobs_created_at", ["created_at"]),
    ("jobs", "ix_jobs_state_created_at", ["state", "created_at"]),
    ("jobs", "ix_jobs_route_created_at", ["route", "created_at"]),
    ("jobs", "ix_jobs_finished_at", ["finished_at"]),
)


def upgrade() -> None:
    for table, name, columns in _INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for table, name, _columns in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
