"""study.allocation: the arm pairs an adaptive plan sends new trials to first

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 16:30:00

With `adaptive = true` in its [analysis] plan, a study's stop check keeps here the arm pairs whose
answer is still open (names, and keys of their arms' ids for the rating service's candidate
order). NULL for every existing study: uniform allocation, as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("study") as batch:
        batch.add_column(sa.Column("allocation", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("study") as batch:
        batch.drop_column("allocation")
