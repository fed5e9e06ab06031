from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.clips.models import Clip
from app.db import Base, UTCDateTime, str_enum, utcnow
from app.studies.models import Prompt

UNRELEASED = "answered_at IS NULL AND released_at IS NULL"


class Matchup(Base):
    """Two clips of the same prompt from two different arms (arm_a_id < arm_b_id).

    The composite foreign keys make a matchup across prompts or within one arm impossible:
    each (clip, prompt, arm) triple must exist in `clip`, with one shared prompt_id.
    """

    __tablename__ = "matchup"
    __table_args__ = (
        ForeignKeyConstraint(
            ["prompt_id", "study_id"], ["prompt.id", "prompt.study_id"], ondelete="CASCADE"
        ),
        ForeignKeyConstraint(
            ["clip_a_id", "prompt_id", "arm_a_id"],
            ["clip.id", "clip.prompt_id", "clip.arm_id"],
            ondelete="CASCADE",
        ),
        ForeignKeyConstraint(
            ["clip_b_id", "prompt_id", "arm_b_id"],
            ["clip.id", "clip.prompt_id", "clip.arm_id"],
            ondelete="CASCADE",
        ),
        UniqueConstraint("clip_a_id", "clip_b_id"),
        CheckConstraint("arm_a_id < arm_b_id", name="arms_ordered_distinct"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(Integer, index=True)
    prompt_id: Mapped[int] = mapped_column(Integer, index=True)
    clip_a_id: Mapped[int] = mapped_column(Integer)
    clip_b_id: Mapped[int] = mapped_column(Integer)
    arm_a_id: Mapped[int] = mapped_column(Integer)
    arm_b_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Assignment's counters, changed in the transaction that changes the trials they count:
    # fresh trials counting towards coverage (answered, or unanswered and not released), those
    # with clip A on the left, and those whose evaluator has fresh trials to come (Trial.judging).
    live_trials: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    a_left: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    open_evaluators: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    clip_a: Mapped[Clip] = relationship(foreign_keys=[clip_a_id], viewonly=True)
    clip_b: Mapped[Clip] = relationship(foreign_keys=[clip_b_id], viewonly=True)
    prompt: Mapped[Prompt] = relationship(
        primaryjoin="Matchup.prompt_id == Prompt.id", foreign_keys=[prompt_id], viewonly=True
    )


class Evaluator(Base):
    """A pseudonymous participant: invite token or an external id such as a Prolific PID.

    One invite (its nonce) and one external id each map to exactly one evaluator per study, so
    opening the same link again resumes instead of duplicating.
    """

    __tablename__ = "evaluator"
    __table_args__ = (
        UniqueConstraint("study_id", "external_id"),
        # A unique index rather than a constraint: SQLite adds it without rebuilding the table.
        Index("uq_evaluator_study_id_invite", "study_id", "invite", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"), index=True)
    public_id: Mapped[str] = mapped_column(String(64), unique=True)  # random, in cookies/URLs
    external_id: Mapped[str | None] = mapped_column(String(200))
    # The recruiting platform's study and session of the latest join that named them (on
    # Prolific STUDY_ID and SESSION_ID, beside PROLIFIC_PID in external_id).
    external_study_id: Mapped[str | None] = mapped_column(String(200))
    external_session_id: Mapped[str | None] = mapped_column(String(200))
    invite: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completion_code: Mapped[str | None] = mapped_column(String(64))


class Choice(enum.StrEnum):
    left = "left"
    right = "right"
    tie = "tie"


class Trial(Base):
    """One matchup shown to one evaluator; `a_on_left` records which clip was on which side.

    `position` is the trial's 1-based place in the evaluator's sequence (unique per evaluator, so
    two concurrent requests cannot both create "the next" trial). A trial is assigned when it is
    first requested, possibly ahead of time so the browser can prefetch its clips; `shown_at` is
    set when it becomes the evaluator's current pair, `answered_at` when its votes are stored.
    """

    __tablename__ = "trial"
    __table_args__ = (
        UniqueConstraint("evaluator_id", "matchup_id", "is_repeat"),
        UniqueConstraint("evaluator_id", "position"),
        CheckConstraint(
            "answered_at IS NULL OR (shown_at IS NOT NULL AND answered_at >= shown_at)",
            name="answered_after",
        ),
        CheckConstraint("position >= 1", name="position_positive"),
        CheckConstraint("(matchup_id IS NULL) != (gold_pair_id IS NULL)", name="matchup_or_gold"),
        # Unanswered trials whose hold may expire (assignment releases them).
        Index(
            "ix_trial_unreleased",
            "assigned_at",
            sqlite_where=text(UNRELEASED),
            postgresql_where=text(UNRELEASED),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    evaluator_id: Mapped[int] = mapped_column(
        ForeignKey("evaluator.id", ondelete="CASCADE"), index=True
    )
    # NULL for a gold trial (`gold_pair_id` set instead): it judges no matchup of two arms.
    matchup_id: Mapped[int | None] = mapped_column(
        ForeignKey("matchup.id", ondelete="CASCADE"), index=True
    )
    # A gold trial (quality control, app/rating/gold.py): the pair whose right answer is known.
    gold_pair_id: Mapped[int | None] = mapped_column(
        ForeignKey("gold_pair.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    a_on_left: Mapped[bool] = mapped_column(Boolean)
    is_repeat: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    shown_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set when the trial stopped counting towards its matchup's coverage, unanswered after its
    # hold; it counts again if answered later.
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Counted in its matchup's open_evaluators: a fresh trial whose evaluator has fresh trials
    # to come.
    judging: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    flagged: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    flag_reason: Mapped[str | None] = mapped_column(String(200))
    # Measured by the rating page on its monotonic clock (NULL when the client reported none):
    # receiving the pair as current -> both clips revealed, revealed -> answer given.
    client_load_seconds: Mapped[float | None] = mapped_column(Float)
    client_view_seconds: Mapped[float | None] = mapped_column(Float)
    # Watch telemetry from the rating page (NULL when the client reported none): whole-loop
    # equivalents each side's clip played while on screen with the tab visible (visible time /
    # the clip's loop duration: a GIF cannot report its loops), both of them >= 1, and the time
    # the tab was hidden between receiving the pair and the answer.
    loops_left: Mapped[float | None] = mapped_column(Float)
    loops_right: Mapped[float | None] = mapped_column(Float)
    watched_both: Mapped[bool | None] = mapped_column(Boolean)
    hidden_seconds: Mapped[float | None] = mapped_column(Float)

    matchup: Mapped[Matchup | None] = relationship()
    gold_pair: Mapped[GoldPair | None] = relationship()
    evaluator: Mapped[Evaluator] = relationship()
    votes: Mapped[list[Vote]] = relationship(back_populates="trial", cascade="all, delete-orphan")

    @property
    def left_clip_id(self) -> int:
        """The clip on the left (a trial of a matchup; a gold trial's are its gold pair's)."""
        assert self.matchup is not None, "a gold trial judges no matchup"
        return self.matchup.clip_a_id if self.a_on_left else self.matchup.clip_b_id

    @property
    def right_clip_id(self) -> int:
        assert self.matchup is not None, "a gold trial judges no matchup"
        return self.matchup.clip_b_id if self.a_on_left else self.matchup.clip_a_id


class GoldKind(enum.StrEnum):
    frozen = "frozen"  # the clip frozen on one frame
    degraded = "degraded"  # the clip heavily blurred and noised
    mismatched = "mismatched"  # a clip of another prompt, shown with this prompt's text


class GoldPair(Base):
    """A pair whose right answer is known (quality control, app/rating/gold.py): `clip_id`, a
    done clip of the study, against its gold twin, which is the right answer's loser.

    `frozen` and `degraded` twins are GIFs made from the clip (same frames, delays and size),
    stored under their content hash like any clip, in the media columns here; a `mismatched`
    pair's other side is `other_clip_id`, the same arm's clip of another prompt. Twins are no
    Clip rows: they never enter matchups, clip counts, render panels or clips.csv.
    """

    __tablename__ = "gold_pair"
    __table_args__ = (
        UniqueConstraint("clip_id", "kind"),
        CheckConstraint(
            "(kind = 'mismatched') = (other_clip_id IS NOT NULL)", name="mismatched_has_other"
        ),
        CheckConstraint(
            "kind = 'mismatched' OR (storage_key IS NOT NULL AND sha256 IS NOT NULL)",
            name="twin_has_media",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompt.id", ondelete="CASCADE"))
    kind: Mapped[GoldKind] = mapped_column(str_enum(GoldKind, "gold_kind"))
    clip_id: Mapped[int] = mapped_column(ForeignKey("clip.id", ondelete="CASCADE"), index=True)
    other_clip_id: Mapped[int | None] = mapped_column(ForeignKey("clip.id", ondelete="CASCADE"))
    storage_key: Mapped[str | None] = mapped_column(String(100))
    sha256: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    num_frames: Mapped[int | None] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Vote(Base):
    """One criterion's answer within a trial. Exactly one per (trial, criterion)."""

    __tablename__ = "vote"
    __table_args__ = (UniqueConstraint("trial_id", "criterion"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id", ondelete="CASCADE"), index=True)
    criterion: Mapped[str] = mapped_column(String(63))
    choice: Mapped[Choice] = mapped_column(str_enum(Choice, "vote_choice"))

    trial: Mapped[Trial] = relationship(back_populates="votes")
