"""The analysis plan a study fixes before its data: what the sequential verdicts test.

Plain frozen dataclasses, no validation (the study file's `[analysis]` table is validated by
`AnalysisSpec` in `app.studies.analysis`, which builds a `Plan` through `AnalysisSpec.plan(...)`;
`app.studies.service.analysis_plan(study, focus=...)` is the call the dashboard, report and
exports make). This module imports nothing from the app: the statistics
(`app.analysis.sequential`) build on it, the studies package sits above it.

Orientation as in `app.analysis.schemas`: each hypothesis is about `arm` (the focus arm)
against `opponent`, on the decisive win rate p of `arm` (ties excluded).

- `superiority` (two-sided): H0 p = 1/2; `margin` is 0.0.
- `non_inferiority`: H0 p <= 1/2 - margin; `margin` in win-rate points (0.05 = five points).

`stop` is `"when_decided"` (stop assigning once every primary hypothesis is decided or the
`budget` of votes is spent) or `"never"`. `budget` is a number of votes (None: no cap).
`compare` is what the plan asks: `"focus"` (the focus arm against every other arm) or `"best"`
(every pair of arms, oriented in the study's order of arms: which arm is best, i.e. superior to
every other, per criterion; `app.analysis.allocation` says when that is decided).
`adaptive` asks for adaptive allocation of trials between arm pairs (three or more arms): new
trials go first to the arm pairs whose answer is still open (`app.analysis.allocation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

HypothesisKind = Literal["superiority", "non_inferiority"]
StopRule = Literal["when_decided", "never"]
CompareRule = Literal["focus", "best"]

HYPOTHESES: tuple[str, ...] = ("superiority", "non_inferiority")
STOP_RULES: tuple[str, ...] = ("when_decided", "never")
COMPARE_RULES: tuple[str, ...] = ("focus", "best")
DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class Hypothesis:
    """One pre-registered test: `arm` against `opponent` on `criterion`."""

    criterion: str
    arm: str
    opponent: str
    hypothesis: HypothesisKind
    margin: float
    primary: bool


@dataclass(frozen=True)
class Plan:
    """A study's plan: family-wise `alpha` over `hypotheses`, and when to stop assigning."""

    alpha: float
    hypotheses: tuple[Hypothesis, ...]
    stop: StopRule
    budget: int | None
    adaptive: bool
    compare: CompareRule = "focus"

    @property
    def primary(self) -> tuple[Hypothesis, ...]:
        """The hypotheses whose decision ends the study under `stop = "when_decided"`."""
        return tuple(h for h in self.hypotheses if h.primary)


__all__ = [
    "COMPARE_RULES",
    "DEFAULT_ALPHA",
    "HYPOTHESES",
    "STOP_RULES",
    "CompareRule",
    "Hypothesis",
    "HypothesisKind",
    "Plan",
    "StopRule",
]
