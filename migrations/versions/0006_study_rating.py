"""study.rating: the study file's [rating] table under its own name; study.updated_at goes

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10 09:00:00

- study.settings is renamed study.rating: the study file's `[rating]` table, the column that
  stores it and the type that validates it (`RatingSpec`) share one name. Values are unchanged.
- study.updated_at is dropped: it was written on every change of a study and read by nothing.
  A downgrade brings it back set to each study's created_at.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("study") as batch:
        batch.alter_column("settings", new_column_name="rating", existing_type=sa.JSON())
        batch.drop_column("updated_at")


def downgrade() -> None:
    with op.batch_alter_table("study") as batch:
        batch.alter_column("rating", new_column_name="settings", existing_type=sa.JSON())
        batch.add_column(sa.Column("updated_at", app.db.UTCDateTime(timezone=True), nullable=True))
    op.execute("UPDATE study SET updated_at = created_at")
    with op.batch_alter_table("study") as batch:
        batch.alter_column(
            "updated_at", existing_type=app.db.UTCDateTime(timezone=True), nullable=False
        )
