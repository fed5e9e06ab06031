"""What a dashboard shows: its filters (query parameters) and the computed views."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.analysis import (
    AgreementResult,
    BootstrapSummary,
    BradleyTerryResult,
    EvaluatorQuality,
    PairwiseSummary,
    SpeedPreference,
    VerdictSummary,
)
from app.analysis.confounds import ConfoundSummary
from app.analysis.plan import Plan


class Filters(BaseModel):
    """Dashboard, export and report options; every field is a GET query parameter."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    exclude_flagged_trials: bool = False
    exclude_flagged_evaluators: bool = False
    exclude_ties: bool = False
    arm: str | None = Field(default=None, description="focus arm: results read as its win rate")
    criterion: str | None = Field(default=None, description="criterion of the speed chart")
    margin: float | None = Field(
        default=None, ge=0, lt=50, description="non-inferiority margin, percentage points"
    )

    @field_validator("arm", "criterion", "margin", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    def tally_filters(self) -> dict[str, bool]:
        return {
            "exclude_flagged_trials": self.exclude_flagged_trials,
            "exclude_flagged_evaluators": self.exclude_flagged_evaluators,
            "exclude_ties": self.exclude_ties,
        }

    def query(self) -> str:
        """The non-default fields as a query string (for links that keep the filters)."""
        values = self.model_dump(exclude_defaults=True)
        return urlencode({k: ("1" if v is True else v) for k, v in values.items()})

    def describe(self) -> list[str]:
        """Human-readable list of what is excluded or set."""
        out = []
        if self.exclude_flagged_trials:
            out.append("flagged trials excluded")
        if self.exclude_flagged_evaluators:
            out.append("flagged evaluators excluded")
        if self.exclude_ties:
            out.append("ties excluded")
        if self.margin is not None:
            out.append(f"non-inferiority margin {self.margin:g} pp")
        return out


@dataclass(frozen=True, slots=True)
class CriterionLabel:
    key: str
    label: str


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    trials: int
    votes: int
    cumulative_votes: int


@dataclass(frozen=True, slots=True)
class Timeline:
    buckets: tuple[Bucket, ...]
    bucket_minutes: int

    @property
    def label(self) -> str:
        names = {1: "minute", 60: "hour", 1440: "day", 10080: "week"}
        if self.bucket_minutes in names:
            return names[self.bucket_minutes]
        if self.bucket_minutes < 60:
            return f"{self.bucket_minutes} minutes"
        return f"{self.bucket_minutes // 60} hours"


@dataclass(frozen=True, slots=True)
class EvaluatorProgress:
    joined: int
    started: int
    completed: int
    flagged: int
    planned_trials: int  # trials each evaluator answers in all (quota + repeats)
    answered_trials: int
    median_answered: float | None
    histogram: tuple[tuple[str, int], ...]  # (answered-trials range, evaluators)


@dataclass(frozen=True, slots=True)
class PlanChangeNote:
    """A change of the analysis plan after its lock, in words (`alpha: 0.05 -> 0.01`)."""

    changed_at: datetime
    reason: str
    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VerdictView:
    """The plan's anytime-valid verdicts and what they rest on (the same whatever the page's
    filters: the plan fixes the data rule, so choosing filters cannot become another look)."""

    plan: Plan
    summary: VerdictSummary
    waiting: int  # evaluators with answers who have not finished: their votes enter when they do
    closed: bool  # the study is closed: every evaluator counts
    locked_at: datetime | None  # when the plan was locked (the study opened)
    changes: tuple[PlanChangeNote, ...]  # changes after the lock, oldest first
    note: str | None = None  # why the default plan stands in (a stored plan that no longer fits)
    # Adaptive plans: the arm pairs new trials go to first now (None: uniform, nothing open).
    wanted: tuple[tuple[str, str], ...] | None = None
    # compare = "best": per primary criterion, the arm identified as best (None: not yet).
    best: tuple[tuple[str, str | None], ...] = ()

    @property
    def decided(self) -> int:
        return sum(v.status != "undecided" for v in self.summary.verdicts)


@dataclass(frozen=True, slots=True)
class Dashboard:
    """Everything the live part of the dashboard (and the report) renders."""

    slug: str
    name: str
    arms: tuple[str, ...]
    criteria: tuple[CriterionLabel, ...]
    filters: Filters
    focus: str  # the arm whose win rates are shown
    summary: PairwiseSummary
    strengths: tuple[BradleyTerryResult, ...]
    speed: tuple[SpeedPreference, ...]
    speed_criterion: str
    progress: EvaluatorProgress
    timeline: Timeline
    version: int
    generated_at: datetime
    compute_ms: float
    verdicts: VerdictView | None = None
    pair_weighted: bool = False  # pooled preferences weigh every opponent equally (adaptive)

    def label(self, criterion: str) -> str:
        return next((c.label for c in self.criteria if c.key == criterion), criterion)


@dataclass(frozen=True, slots=True)
class Advanced:
    """The expensive statistics: prompt-cluster bootstrap, agreement, evaluator quality, and the
    clip measures beside the votes (`confounds`: None where not computed)."""

    bootstrap: BootstrapSummary
    agreement: tuple[AgreementResult, ...]
    evaluators: tuple[EvaluatorQuality, ...]
    n_votes: int
    version: int
    computed_at: datetime
    compute_s: float
    confounds: ConfoundSummary | None = None
