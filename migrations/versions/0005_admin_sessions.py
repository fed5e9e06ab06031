"""admin sessions kept server-side: logging out or changing the password ends them everywhere

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 09:00:00

- admin_session: one row per admin sign-in, keyed by the SHA-256 of the random id its cookie
  carries; `revoked_at` is set at logout; `password_mac` fingerprints the admin password the
  session began under (a session from before a password change is refused).

Cookies from before this revision carry no session id: admins sign in once more.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "admin_session",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("created_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", app.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("password_mac", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_session")),
    )


def downgrade() -> None:
    op.drop_table("admin_session")
