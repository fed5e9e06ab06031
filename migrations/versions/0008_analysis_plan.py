"""study.analysis: the study file's [analysis] plan, locked when the study opens; analysis_change

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-12 09:00:00

- study.analysis: the [analysis] table as validated by AnalysisSpec; existing studies get {}
  (the defaults: alpha 0.05, two-sided superiority on every criterion, all primary, the
  fastest arm as focus, never stop).
- study.analysis_locked_at: when the plan was locked (the study first opened). Studies already
  open or closed had the defaults from their creation on, with no way to change them: they are
  locked as of their created_at.
- analysis_change: every change of a plan after its lock, with its time, before and after.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable first (a plain ALTER on every backend), backfilled, then NOT NULL.
    op.add_column("study", sa.Column("analysis", sa.JSON(), nullable=True))
    op.add_column(
        "study", sa.Column("analysis_locked_at", app.db.UTCDateTime(timezone=True), nullable=True)
    )
    op.execute("UPDATE study SET analysis = '{}'")
    op.execute(
        "UPDATE study SET analysis_locked_at = created_at WHERE status IN ('open', 'closed')"
    )
    with op.batch_alter_table("study") as batch:
        batch.alter_column("analysis", existing_type=sa.JSON(), nullable=False)
    op.create_table(
        "analysis_change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("changed_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("before", sa.JSON(), nullable=False),
        sa.Column("after", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["study.id"],
            name=op.f("fk_analysis_change_study_id_study"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analysis_change")),
    )
    op.create_index(
        op.f("ix_analysis_change_study_id"), "analysis_change", ["study_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_analysis_change_study_id"), table_name="analysis_change")
    op.drop_table("analysis_change")
    with op.batch_alter_table("study") as batch:
        batch.drop_column("analysis_locked_at")
        batch.drop_column("analysis")
