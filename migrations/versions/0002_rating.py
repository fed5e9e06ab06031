"""rating: trial positions and assignment time, prefetchable trials, one evaluator per invite

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 05:45:42.485454

- trial.position: the trial's 1-based place in its evaluator's sequence, unique per evaluator.
- trial.assigned_at: when the trial was assigned (possibly ahead of time, for prefetching).
- trial.shown_at becomes nullable: set when the trial becomes the evaluator's current pair.
- evaluator (study_id, invite) is unique: one invite link is one evaluator.
"""

from collections.abc import Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_CHECK = "answered_at IS NULL OR answered_at >= shown_at"
NEW_CHECK = "answered_at IS NULL OR (shown_at IS NOT NULL AND answered_at >= shown_at)"


@contextmanager
def votes_kept(table: str):
    """Keep `vote` rows across a SQLite rebuild of `table`.

    SQLite rebuilds a table to alter it (copy, DROP, rename), and the app's connections run with
    `PRAGMA foreign_keys=ON`, under which DROP TABLE deletes the rows first and so cascades to
    `vote` (ON DELETE CASCADE). PRAGMA foreign_keys cannot change inside the migration's
    transaction, so the votes are copied aside and put back, atomically in the same transaction.
    """
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("CREATE TEMP TABLE _kept_vote AS SELECT * FROM vote")
    yield
    if sqlite:
        op.execute("DELETE FROM vote")
        op.execute("INSERT INTO vote SELECT * FROM _kept_vote")
        op.execute("DROP TABLE _kept_vote")


def upgrade() -> None:
    op.create_index("uq_evaluator_study_id_invite", "evaluator", ["study_id", "invite"], unique=True)

    # Nullable first (a plain ALTER on every backend), backfilled, then NOT NULL.
    with op.batch_alter_table("trial", schema=None) as batch_op:
        batch_op.add_column(sa.Column("position", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("assigned_at", app.db.UTCDateTime(timezone=True), nullable=True)
        )
    op.execute(
        "UPDATE trial SET assigned_at = shown_at, position = ("
        " SELECT count(*) FROM trial AS earlier"
        " WHERE earlier.evaluator_id = trial.evaluator_id"
        " AND (earlier.shown_at < trial.shown_at"
        "  OR (earlier.shown_at = trial.shown_at AND earlier.id <= trial.id)))"
    )
    with votes_kept("trial"), op.batch_alter_table("trial", schema=None) as batch_op:
        batch_op.alter_column("position", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column(
            "assigned_at", existing_type=app.db.UTCDateTime(timezone=True), nullable=False
        )
        batch_op.alter_column(
            "shown_at", existing_type=app.db.UTCDateTime(timezone=True), nullable=True
        )
        batch_op.create_unique_constraint(
            batch_op.f("uq_trial_evaluator_id_position"), ["evaluator_id", "position"]
        )
        batch_op.drop_constraint(batch_op.f("ck_trial_answered_after"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_trial_answered_after"), NEW_CHECK)
        batch_op.create_check_constraint(batch_op.f("ck_trial_position_positive"), "position >= 1")


def downgrade() -> None:
    # Trials assigned for prefetching but never shown have no shown_at: use their assignment time.
    op.execute("UPDATE trial SET shown_at = assigned_at WHERE shown_at IS NULL")
    with votes_kept("trial"), op.batch_alter_table("trial", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_trial_position_positive"), type_="check")
        batch_op.drop_constraint(batch_op.f("ck_trial_answered_after"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_trial_answered_after"), OLD_CHECK)
        batch_op.drop_constraint(batch_op.f("uq_trial_evaluator_id_position"), type_="unique")
        batch_op.alter_column(
            "shown_at", existing_type=app.db.UTCDateTime(timezone=True), nullable=False
        )
        batch_op.drop_column("assigned_at")
        batch_op.drop_column("position")
    op.drop_index("uq_evaluator_study_id_invite", table_name="evaluator")
