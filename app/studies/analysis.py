"""The study file's `[analysis]` table: the plan the sequential verdicts test, as a strict
pydantic model (`AnalysisSpec`), checked against a study's criteria and arms and turned into the
statistics' input (`app.analysis.plan.Plan`). `app.studies.studyfile` reads it from a study file
with `file:line:column` problems; `app.studies.service` stores, locks and changes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, StrictBool, StrictInt, model_validator
from pydantic_core import PydanticCustomError

from app.analysis.plan import (
    DEFAULT_ALPHA,
    CompareRule,
    Hypothesis,
    HypothesisKind,
    Plan,
    StopRule,
)
from app.studies.schemas import Slug, Strict

Rate = Annotated[float, Field(strict=True, gt=0, lt=0.5)]
# Where in the [analysis] table a problem is (keys below `analysis`), and what it is.
PlanProblem = tuple[tuple[str | int, ...], str]


class CriterionAnalysis(Strict):
    """`[analysis.criteria.<key>]`: one criterion's test, where it differs from the table's."""

    hypothesis: HypothesisKind | None = None  # default: [analysis] hypothesis
    margin: Rate | None = None  # win-rate points; only with non_inferiority
    primary: StrictBool | None = None  # default: [analysis] primary


class AnalysisSpec(Strict):
    """The study file's `[analysis]` table: the plan the sequential verdicts test, fixed before
    the data (locked when the study opens; a later change is kept in `analysis_change`).

    Every criterion is tested, the focus arm against every other arm (`compare = "focus"`) or
    every pair of arms, to find the best arm (`compare = "best"`): `hypothesis` and `margin`
    for all criteria, `[analysis.criteria.<key>]` where one differs; `primary` lists the criteria
    whose decision ends the study under `stop = "when_decided"` (default: all). `focus` None is
    the fastest arm, resolved at analysis time. `plan(...)` gives the statistics' input.
    """

    alpha: Rate = DEFAULT_ALPHA
    focus: Slug | None = None
    stop: StopRule = "never"
    budget: StrictInt | None = Field(default=None, ge=1, le=100_000_000)  # votes
    adaptive: StrictBool = False
    compare: CompareRule = "focus"
    hypothesis: HypothesisKind = "superiority"
    margin: Rate | None = None
    # Criterion keys are checked against the study's (`check`), which names the valid ones.
    primary: list[str] | None = Field(default=None, min_length=1)
    criteria: dict[str, CriterionAnalysis] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> AnalysisSpec:
        problems = self.inconsistencies()
        if problems:
            summary = "; ".join(f"{_where(loc)}: {message}" for loc, message in problems)
            raise PydanticCustomError(
                "analysis_plan", "{summary}", {"summary": summary, "problems": problems}
            )
        return self

    def inconsistencies(self) -> list[PlanProblem]:
        """Problems within the table itself (`check` adds those against the study)."""
        problems: list[PlanProblem] = []
        if self.hypothesis == "superiority" and self.margin is not None:
            problems.append((("margin",), _MARGIN_WITH_SUPERIORITY))
        if self.hypothesis == "non_inferiority" and self.margin is None:
            problems.append((("hypothesis",), _NO_MARGIN))
        if self.budget is not None and self.stop == "never":
            message = (
                'a budget needs stop = "when_decided" (with stop = "never" the study never '
                "stops assigning)"
            )
            problems.append((("budget",), message))
        if self.compare == "best" and self.focus is not None:
            message = (
                'a focus arm applies only to compare = "focus"; compare = "best" tests every '
                "pair of arms"
            )
            problems.append((("focus",), message))
        if self.compare == "best":
            best_needs = (
                'compare = "best" needs superiority tests (the best arm is the one superior to '
                "every other)"
            )
            if self.hypothesis != "superiority":
                problems.append((("hypothesis",), best_needs))
            for key, entry in self.criteria.items():
                if entry.hypothesis not in (None, "superiority"):
                    problems.append((("criteria", key, "hypothesis"), best_needs))
        listed = self.primary or []
        for index, key in enumerate(listed):
            if key in listed[:index]:
                problems.append((("primary", index), f"{key!r} is listed twice"))
        for key, entry in self.criteria.items():
            kind = entry.hypothesis or self.hypothesis
            if kind == "superiority" and entry.margin is not None:
                problems.append((("criteria", key, "margin"), _MARGIN_WITH_SUPERIORITY))
            if kind == "non_inferiority" and entry.margin is None and self.margin is None:
                problems.append((("criteria", key, "hypothesis"), _NO_MARGIN))
            listed_here = key in listed
            if self.primary is not None and entry.primary not in (None, listed_here):
                said = "in" if listed_here else "not in"
                flag = str(entry.primary).lower()
                message = f"primary = {flag}, but {key!r} is {said} the [analysis] primary list"
                problems.append((("criteria", key, "primary"), message))
        return problems

    def check(self, *, criteria: Sequence[str], arms: Sequence[str]) -> list[PlanProblem]:
        """Problems against the study: criteria and arms it does not have, no primary test."""
        problems: list[PlanProblem] = []
        if self.focus is not None and self.focus not in arms:
            problems.append((("focus",), f"unknown arm {self.focus!r}: use one of {list(arms)}"))
        for key in self.criteria:
            if key not in criteria:
                problems.append((("criteria", key), _unknown_criterion(key, criteria)))
        for index, key in enumerate(self.primary or []):
            if key not in criteria:
                problems.append((("primary", index), _unknown_criterion(key, criteria)))
        if self.adaptive and len(arms) < 3:
            message = (
                f"adaptive allocation needs three or more arms; this study has {len(arms)}, "
                "so every trial compares the same pair"
            )
            problems.append((("adaptive",), message))
        if not problems and not any(t.primary for t in self.tests(criteria)):
            problems.append((("primary",), "no criterion is primary: name at least one"))
        return problems

    def tests(self, criteria: Sequence[str]) -> list[CriterionTest]:
        """Each criterion's hypothesis, margin (0.0 for superiority) and primary flag, in the
        study's order of criteria."""
        out: list[CriterionTest] = []
        for key in criteria:
            entry = self.criteria.get(key, CriterionAnalysis())
            kind = entry.hypothesis or self.hypothesis
            margin = (entry.margin or self.margin or 0.0) if kind == "non_inferiority" else 0.0
            if entry.primary is not None:
                primary = entry.primary
            else:
                primary = self.primary is None or key in self.primary
            out.append(CriterionTest(key, kind, margin, primary))
        return out

    def plan(self, *, criteria: Sequence[str], arms: Sequence[str], focus: str) -> Plan:
        """The statistics' input: every criterion x (focus arm, other arm), in the study's order
        of criteria and arms. `focus` is the resolved focus arm: `self.focus` where the plan
        names one (a different `focus` is refused), else the one the caller resolved (the
        fastest arm)."""
        if self.focus is not None and focus != self.focus:
            raise ValueError(f"the plan's focus arm is {self.focus!r}, not {focus!r}")
        if focus not in arms:
            raise ValueError(f"unknown focus arm {focus!r}: the study's arms are {list(arms)}")
        problems = self.check(criteria=criteria, arms=arms)
        if problems:
            raise ValueError("; ".join(f"{_where(loc)}: {message}" for loc, message in problems))
        if self.compare == "best":  # every pair, in the study's order of arms
            pairs = [(a, b) for i, a in enumerate(arms) for b in arms[i + 1 :]]
        else:
            pairs = [(focus, opponent) for opponent in arms if opponent != focus]
        hypotheses = tuple(
            Hypothesis(
                criterion=test.criterion,
                arm=arm,
                opponent=opponent,
                hypothesis=test.hypothesis,
                margin=test.margin,
                primary=test.primary,
            )
            for test in self.tests(criteria)
            for arm, opponent in pairs
        )
        return Plan(
            alpha=self.alpha,
            hypotheses=hypotheses,
            stop=self.stop,
            budget=self.budget,
            adaptive=self.adaptive,
            compare=self.compare,
        )


@dataclass(frozen=True)
class CriterionTest:
    """One criterion's test as the plan resolves it (shown on the study page)."""

    criterion: str
    hypothesis: HypothesisKind
    margin: float
    primary: bool


_MARGIN_WITH_SUPERIORITY = (
    'a margin applies only to hypothesis = "non_inferiority"; a superiority test has none'
)
_NO_MARGIN = (
    'hypothesis = "non_inferiority" needs a margin in win-rate points (e.g. margin = 0.05 for '
    "five points)"
)


def _unknown_criterion(key: str, criteria: Sequence[str]) -> str:
    return f"unknown criterion {key!r}: the study's criteria are {list(criteria)}"


def _where(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in ("analysis", *loc))


def analysis_toml(spec: AnalysisSpec) -> str:
    """The plan as an `[analysis]` table (what the study page's plan form starts from): only
    what differs from the defaults, so that `parse_analysis` reads back the same plan."""
    lines = ["[analysis]"]
    defaults = AnalysisSpec()
    keys = ("alpha", "focus", "compare", "stop", "budget", "adaptive", "hypothesis", "margin")
    for key in (*keys, "primary"):
        value = getattr(spec, key)
        if value != getattr(defaults, key):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, entry in spec.criteria.items():
        lines += ["", f"[analysis.criteria.{_toml_key(key)}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in entry if v is not None]
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    return repr(value)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)
