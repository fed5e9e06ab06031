"""assignment counters: per-matchup coverage and side counts, released trials

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 09:00:00

Assignment used to count a study's live trials with GROUP BYs over every trial on each request,
which grew with the study and held the write lock meanwhile. The counts now live on the matchup
and change in the transaction that changes the trials they count:

- matchup.live_trials: fresh (non-repeat) trials that count towards coverage: answered, or
  unanswered and not released;
- matchup.a_left: of those, the ones that showed clip A on the left (side counterbalancing);
- matchup.open_judges: fresh trials of evaluators who have fresh trials to come (assignment
  fills first the matchups that many such evaluators cannot take); trial.judging marks the
  trials it counts;
- trial.released_at: when an unanswered trial's hold expired and it stopped counting (it counts
  again if its evaluator comes back and answers it); a partial index finds trials to release.

The upgrade fills the counters from the trials; holds that have already expired are released by
the first assignment after it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNRELEASED = "answered_at IS NULL AND released_at IS NULL"


def upgrade() -> None:
    for name in ("live_trials", "a_left", "open_judges"):
        op.add_column(
            "matchup", sa.Column(name, sa.Integer(), nullable=False, server_default="0")
        )
    op.add_column("trial", sa.Column("released_at", app.db.UTCDateTime(), nullable=True))
    op.add_column(
        "trial",
        sa.Column("judging", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index(
        "ix_trial_unreleased",
        "trial",
        ["assigned_at"],
        sqlite_where=sa.text(UNRELEASED),
        postgresql_where=sa.text(UNRELEASED),
    )
    # Unfinished evaluators' fresh trials judge (they may have more to come).
    op.execute(
        """
        UPDATE trial SET judging = TRUE
        WHERE NOT is_repeat AND evaluator_id IN
          (SELECT id FROM evaluator WHERE completed_at IS NULL)
        """
    )
    op.execute(
        """
        UPDATE matchup SET
          live_trials = (SELECT count(*) FROM trial
                         WHERE trial.matchup_id = matchup.id AND NOT trial.is_repeat),
          a_left = (SELECT count(*) FROM trial
                    WHERE trial.matchup_id = matchup.id AND NOT trial.is_repeat
                      AND trial.a_on_left),
          open_judges = (SELECT count(*) FROM trial
                         WHERE trial.matchup_id = matchup.id AND trial.judging)
        """
    )


def downgrade() -> None:
    op.drop_index("ix_trial_unreleased", table_name="trial")
    with op.batch_alter_table("trial") as batch:
        batch.drop_column("judging")
        batch.drop_column("released_at")
    with op.batch_alter_table("matchup") as batch:
        for name in ("open_judges", "a_left", "live_trials"):
            batch.drop_column(name)
