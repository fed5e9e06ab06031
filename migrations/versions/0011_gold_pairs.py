"""gold_pair and trial.gold_pair_id: pairs whose right answer is known (quality control)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 16:10:00

A study with `[rating] gold_rate` shows evaluators gold pairs now and then: one of its clips
against a twin made from it (frozen on one frame, or degraded) or against the same arm's clip of
another prompt. A gold trial judges no matchup, so trial.matchup_id becomes nullable, with
exactly one of matchup_id and gold_pair_id set. Every existing trial keeps its matchup.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECK = "(matchup_id IS NULL) != (gold_pair_id IS NULL)"


@contextmanager
def votes_kept() -> Iterator[None]:
    """Keep `vote` rows across a SQLite rebuild of `trial` (see migration 0002): with
    `PRAGMA foreign_keys=ON` its DROP TABLE would cascade to the votes."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("CREATE TEMP TABLE _kept_vote AS SELECT * FROM vote")
    yield
    if sqlite:
        op.execute("DELETE FROM vote")
        op.execute("INSERT INTO vote SELECT * FROM _kept_vote")
        op.execute("DROP TABLE _kept_vote")


def upgrade() -> None:
    op.create_table(
        "gold_pair",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "frozen",
                "degraded",
                "mismatched",
                name="gold_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("clip_id", sa.Integer(), nullable=False),
        sa.Column("other_clip_id", sa.Integer(), nullable=True),
        sa.Column("storage_key", sa.String(length=100), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size_bytes", sa.Integer(), nullable=True),
        sa.Column("num_frames", sa.Integer(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("created_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(kind = 'mismatched') = (other_clip_id IS NOT NULL)",
            name=op.f("ck_gold_pair_mismatched_has_other"),
        ),
        sa.CheckConstraint(
            "kind = 'mismatched' OR (storage_key IS NOT NULL AND sha256 IS NOT NULL)",
            name=op.f("ck_gold_pair_twin_has_media"),
        ),
        sa.ForeignKeyConstraint(
            ["clip_id"], ["clip.id"], name=op.f("fk_gold_pair_clip_id_clip"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["other_clip_id"],
            ["clip.id"],
            name=op.f("fk_gold_pair_other_clip_id_clip"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompt.id"],
            name=op.f("fk_gold_pair_prompt_id_prompt"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["study.id"], name=op.f("fk_gold_pair_study_id_study"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gold_pair")),
        sa.UniqueConstraint("clip_id", "kind", name=op.f("uq_gold_pair_clip_id_kind")),
    )
    op.create_index(op.f("ix_gold_pair_clip_id"), "gold_pair", ["clip_id"], unique=False)
    op.create_index(op.f("ix_gold_pair_study_id"), "gold_pair", ["study_id"], unique=False)
    with votes_kept(), op.batch_alter_table("trial", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gold_pair_id", sa.Integer(), nullable=True))
        batch_op.alter_column("matchup_id", existing_type=sa.Integer(), nullable=True)
        batch_op.create_foreign_key(
            batch_op.f("fk_trial_gold_pair_id_gold_pair"),
            "gold_pair",
            ["gold_pair_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index(batch_op.f("ix_trial_gold_pair_id"), ["gold_pair_id"], unique=False)
        batch_op.create_check_constraint(batch_op.f("ck_trial_matchup_or_gold"), CHECK)


def downgrade() -> None:
    op.execute("DELETE FROM trial WHERE gold_pair_id IS NOT NULL")
    with votes_kept(), op.batch_alter_table("trial", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_trial_matchup_or_gold"), type_="check")
        batch_op.drop_index(batch_op.f("ix_trial_gold_pair_id"))
        batch_op.drop_constraint(batch_op.f("fk_trial_gold_pair_id_gold_pair"), type_="foreignkey")
        batch_op.alter_column("matchup_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("gold_pair_id")
    op.drop_index(op.f("ix_gold_pair_study_id"), table_name="gold_pair")
    op.drop_index(op.f("ix_gold_pair_clip_id"), table_name="gold_pair")
    op.drop_table("gold_pair")
