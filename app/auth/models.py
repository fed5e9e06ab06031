"""Admin sessions kept server-side, so that logging out ends a session everywhere."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class AdminSession(Base):
    """One admin sign-in. The session cookie carries a random id; only its SHA-256 is kept here
    (a database dump signs nobody in). Logging out sets `revoked_at`, so a copy of the cookie is
    refused by every process; a session begun under another admin password is refused too."""

    __tablename__ = "admin_session"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the cookie's id
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    password_mac: Mapped[str] = mapped_column(String(64))  # keys.ADMIN_PASSWORD fingerprint
