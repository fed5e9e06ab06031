"""matchup.open_judges is renamed matchup.open_evaluators (one glossary: evaluator)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 14:10:00

The counter keeps its meaning and values: evaluators with a fresh trial of this matchup who
still have fresh trials to come.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("matchup") as batch:
        batch.alter_column(
            "open_judges", new_column_name="open_evaluators", existing_type=sa.Integer()
        )


def downgrade() -> None:
    with op.batch_alter_table("matchup") as batch:
        batch.alter_column(
            "open_evaluators", new_column_name="open_judges", existing_type=sa.Integer()
        )
