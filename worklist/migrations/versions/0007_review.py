"""radiologist review: reviews, each finding's decision, and signed artifact sets

Revision ID: 0007_review
Revises: 0006_views

``artifacts.artifact_set`` / ``deliveries.artifact_set``: 0 for the model's outputs, *n* for
the outputs of sign-off *n*; a destination gets one delivery per set.
"""

import sqlalchemy as sa
from alembic import op

import worklist.db

revision = "0007_review"
down_revision = "0006_views"
branch_labels = None
depends_on = None


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=16)


def upgrade() -> None:
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("artifact_set", sa.Integer(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("artifact_set", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.drop_constraint("uq_deliveries_job_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_deliveries_job_id", ["job_id", "destination", "artifact_set"]
        )
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("state", _enum("review_state", "open", "signed", "superseded"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("opened_at", worklist.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_at", worklist.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("signed_by", sa.String(length=64), nullable=True),
        sa.Column("signed_at", worklist.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("reviewed_languages", sa.String(length=64), nullable=False),
        sa.Column("signoff", sa.Integer(), nullable=True),
        sa.Column("sent_back_by", sa.String(length=64), nullable=True),
        sa.Column("sent_back_note", sa.Text(), nullable=False),
        sa.Column("superseded_by_job_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_reviews_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
        sa.UniqueConstraint("job_id", name=op.f("uq_reviews_job_id")),
    )
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.create_index("ix_reviews_state_signed_at", ["state", "signed_at"], unique=False)
    op.create_table(
        "review_findings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("review_id", sa.Integer(), nullable=False),
        sa.Column("tracking_uid", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column(
            "origin", _enum("finding_origin", "model", "suggestion", "radiologist"), nullable=False
        ),
        sa.Column(
            "decision",
            _enum("finding_decision", "pending", "accepted", "rejected"),
            nullable=False,
        ),
        sa.Column(
            "reject_reason",
            _enum("reject_reason", "wrong_place", "not_present", "duplicate", "other"),
            nullable=True,
        ),
        sa.Column("reject_note", sa.Text(), nullable=False),
        sa.Column("model_class", sa.String(length=128), nullable=True),
        sa.Column("final_class", sa.String(length=128), nullable=True),
        sa.Column("model_confidence", sa.Float(), nullable=True),
        sa.Column("model_finding", sa.Text(), nullable=True),
        sa.Column("final_finding", sa.Text(), nullable=False),
        sa.Column("edited_languages", sa.String(length=64), nullable=False),
        sa.Column("box_moved", sa.Boolean(), nullable=False),
        sa.Column("box_iou", sa.Float(), nullable=True),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_at", worklist.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["review_id"], ["reviews.id"], name=op.f("fk_review_findings_review_id_reviews")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_findings")),
        sa.UniqueConstraint(
            "review_id", "tracking_uid", name=op.f("uq_review_findings_review_id")
        ),
    )
    with op.batch_alter_table("review_findings", schema=None) as batch_op:
        batch_op.create_index("ix_review_findings_decided_at", ["decided_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_review_findings_review_id"), ["review_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("review_findings")
    op.drop_table("reviews")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_constraint("uq_deliveries_job_id", type_="unique")
        batch_op.create_unique_constraint("uq_deliveries_job_id", ["job_id", "destination"])
        batch_op.drop_column("artifact_set")
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.drop_column("artifact_set")
