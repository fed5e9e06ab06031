"""client timing: when the rating page revealed a trial's clips and when the answer was given

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 10:40:00

The server's shown_at / answered_at include queueing on both sides (the pair is marked shown when
the response that carries it is built, the answer when the submit is processed), so under load a
0.2 s answer was stored as 0.7 s. The rating page measures on its own monotonic clock:

- trial.client_load_seconds: from receiving the pair as current to both clips revealed;
- trial.client_view_seconds: from both clips revealed to the answer given.

Both are bounded by the server's elapsed time when stored (refused otherwise) and are NULL for
answers from API clients that do not report them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("trial", sa.Column("client_load_seconds", sa.Float(), nullable=True))
    op.add_column("trial", sa.Column("client_view_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trial") as batch:
        batch.drop_column("client_view_seconds")
        batch.drop_column("client_load_seconds")
