"""study.stopped_at and study.stop_reason: a study that stops when its plan is decided

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 14:40:00

With `stop = "when_decided"` in its [analysis] plan, a study stops assigning new pairs once every
primary hypothesis is decided or its vote budget is spent; these say when and why. Both NULL for
every existing study (none has stopped).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("study") as batch:
        batch.add_column(sa.Column("stopped_at", app.db.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("stop_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("study") as batch:
        batch.drop_column("stop_reason")
        batch.drop_column("stopped_at")
