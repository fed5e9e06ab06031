"""watch telemetry on trials; the recruiting platform's study and session ids on evaluators

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 16:00:00

- trial.loops_left, trial.loops_right: whole-loop equivalents each side's clip played while on
  screen with the tab visible (the rating page's visible time / the clip's loop duration);
- trial.watched_both: both of them at least one loop;
- trial.hidden_seconds: time the tab was hidden between receiving the pair and the answer;
- evaluator.external_study_id, evaluator.external_session_id: the platform's study and session
  (Prolific's STUDY_ID and SESSION_ID) beside the participant id.

All NULL for existing rows (nothing was measured or recorded).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("trial", sa.Column("loops_left", sa.Float(), nullable=True))
    op.add_column("trial", sa.Column("loops_right", sa.Float(), nullable=True))
    op.add_column("trial", sa.Column("watched_both", sa.Boolean(), nullable=True))
    op.add_column("trial", sa.Column("hidden_seconds", sa.Float(), nullable=True))
    op.add_column("evaluator", sa.Column("external_study_id", sa.String(200), nullable=True))
    op.add_column("evaluator", sa.Column("external_session_id", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("evaluator") as batch:
        batch.drop_column("external_session_id")
        batch.drop_column("external_study_id")
    with op.batch_alter_table("trial") as batch:
        batch.drop_column("hidden_seconds")
        batch.drop_column("watched_both")
        batch.drop_column("loops_right")
        batch.drop_column("loops_left")
