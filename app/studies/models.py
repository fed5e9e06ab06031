from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, UTCDateTime, str_enum, utcnow
from app.studies.schemas import ArmSpec, Criterion


class StudyStatus(enum.StrEnum):
    draft = "draft"
    rendering = "rendering"
    open = "open"
    closed = "closed"


class Study(Base):
    __tablename__ = "study"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[StudyStatus] = mapped_column(
        str_enum(StudyStatus, "study_status"), default=StudyStatus.draft
    )
    # [{key, label, question}, ...] in display order; votes refer to criteria by key.
    criteria: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    # The study file's [rating] table (quota, enrollment, quality control) as validated by
    # RatingSpec.
    rating: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The study file's [analysis] table (the plan the sequential verdicts test) as validated by
    # AnalysisSpec; {} is the defaults. Locked when the study first opens: a change after
    # `analysis_locked_at` is kept in `analysis_changes` (studies.service.set_analysis).
    analysis: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    analysis_locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Set once the plan's stop rule says the study has its answer (stop = "when_decided": every
    # primary hypothesis decided, or the vote budget spent): no new pairs are assigned, and
    # `stop_reason` says why, for the admin (app/dashboard/stopping.py).
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    stop_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # Adaptive allocation (`adaptive = true` in the plan): the arm pairs new trials go to first,
    # as the stop check last computed them from the verdicts (app/dashboard/stopping.py):
    # {"pairs": [[arm, arm], ...] (names), "keys": [arm_a_id * span + arm_b_id, ...] (both
    # orders), "span": int, "updated_at": iso}. None: uniform allocation.
    allocation: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # The study file as uploaded, kept for provenance (loaded only when read: pages and the
    # rating API load studies on every request).
    study_file: Mapped[str] = mapped_column(Text, default="", deferred=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    arms: Mapped[list[Arm]] = relationship(
        back_populates="study", order_by="Arm.position", cascade="all, delete-orphan"
    )
    prompts: Mapped[list[Prompt]] = relationship(
        back_populates="study", order_by="Prompt.position", cascade="all, delete-orphan"
    )
    analysis_changes: Mapped[list[AnalysisChange]] = relationship(
        back_populates="study",
        order_by="AnalysisChange.id",
        cascade="all, delete-orphan",
    )

    @property
    def criterion_list(self) -> list[Criterion]:
        return [Criterion(**c) for c in self.criteria]

    @property
    def criterion_keys(self) -> list[str]:
        return [c["key"] for c in self.criteria]


class Arm(Base):
    """One pipeline configuration of a study. Never shown to evaluators."""

    __tablename__ = "arm"
    __table_args__ = (
        UniqueConstraint("study_id", "name"),
        UniqueConstraint("study_id", "position"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    position: Mapped[int] = mapped_column(Integer)
    # The validated ArmSpec (kind, models, scheduler, steps, guidance, geometry).
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)

    study: Mapped[Study] = relationship(back_populates="arms")

    @property
    def arm_spec(self) -> ArmSpec:
        return ArmSpec.model_validate(self.spec)

    @property
    def kind(self) -> str:
        return str(self.spec["kind"])


class Prompt(Base):
    __tablename__ = "prompt"
    __table_args__ = (
        UniqueConstraint("study_id", "text"),
        UniqueConstraint("study_id", "position"),
        # Target of the matchup's composite foreign key (same study).
        UniqueConstraint("id", "study_id"),
        CheckConstraint("seed >= 0 AND seed < 4294967296", name="seed_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # 1-based order in the prompts CSV
    text: Mapped[str] = mapped_column(Text)
    theme: Mapped[str] = mapped_column(String(100), index=True)
    seed: Mapped[int] = mapped_column(BigInteger)  # shared by every arm: same starting noise

    study: Mapped[Study] = relationship(back_populates="prompts")


class AnalysisChange(Base):
    """A change of a study's analysis plan after it was locked (the study had opened): what it
    was, what it became and when. Kept for good, shown on the study page: never silent."""

    __tablename__ = "analysis_change"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"), index=True)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    before: Mapped[dict[str, Any]] = mapped_column(JSON)
    after: Mapped[dict[str, Any]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text, default="")

    study: Mapped[Study] = relationship(back_populates="analysis_changes")
