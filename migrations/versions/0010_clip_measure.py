"""clip_measure: automatic per-clip measures (motion, flicker, sharpness, colourfulness...)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 16:00:00

One row per clip and measure name with its value and the version of the measure's definition
(app/clips/measures.py). Existing clips get none: `vidarena clips measure SLUG` backfills a study.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clip_measure",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("clip_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("measured_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["clip_id"], ["clip.id"], name=op.f("fk_clip_measure_clip_id_clip"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clip_measure")),
        sa.UniqueConstraint("clip_id", "name", name=op.f("uq_clip_measure_clip_id_name")),
    )
    op.create_index(op.f("ix_clip_measure_clip_id"), "clip_measure", ["clip_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_clip_measure_clip_id"), table_name="clip_measure")
    op.drop_table("clip_measure")
