from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, UTCDateTime, str_enum
from app.studies.models import Arm, Prompt


class ClipStatus(enum.StrEnum):
    pending = "pending"  # exists as a row, nothing queued yet
    queued = "queued"
    rendering = "rendering"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


class Clip(Base):
    """The output of one prompt x arm. State lives here, not in the Celery result backend."""

    __tablename__ = "clip"
    __table_args__ = (
        UniqueConstraint("prompt_id", "arm_id"),
        # Target of the matchup's composite foreign keys: same prompt, known arm.
        UniqueConstraint("id", "prompt_id", "arm_id"),
        CheckConstraint(
            "status != 'done' OR (storage_key IS NOT NULL AND sha256 IS NOT NULL)",
            name="done_has_media",
        ),
        CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompt.id", ondelete="CASCADE"), index=True)
    arm_id: Mapped[int] = mapped_column(ForeignKey("arm.id", ondelete="CASCADE"), index=True)
    status: Mapped[ClipStatus] = mapped_column(
        str_enum(ClipStatus, "clip_status"), default=ClipStatus.pending, index=True
    )
    # Media: a content-hash key in object storage, revealing nothing about arm or prompt.
    storage_key: Mapped[str | None] = mapped_column(String(100))
    sha256: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    num_frames: Mapped[int | None] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    # Render cost: load/denoise/decode/encode seconds, denoiser passes, device, peak memory,
    # library versions, model ids and revisions.
    telemetry: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source: Mapped[str] = mapped_column(String(16), default="render")  # render | import
    # Rendered with tiny random-weight stand-ins (demos, tests): never mix with real results.
    tiny: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    progress_step: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    task_id: Mapped[str | None] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    prompt: Mapped[Prompt] = relationship()
    arm: Mapped[Arm] = relationship()


class ClipMeasure(Base):
    """One automatic measure of a clip's GIF (app/clips/measures.py): motion, flicker, sharpness,
    colourfulness, optionally text similarity. For analysis beside the votes (exported in
    clips.csv), never shown to evaluators. `version` is the measure's definition's version: a
    backfill redoes rows with an older one."""

    __tablename__ = "clip_measure"
    __table_args__ = (UniqueConstraint("clip_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    clip_id: Mapped[int] = mapped_column(ForeignKey("clip.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    value: Mapped[float | None] = mapped_column(Float)  # None: undefined for this clip
    version: Mapped[str] = mapped_column(String(32))
    measured_at: Mapped[datetime] = mapped_column(UTCDateTime)
