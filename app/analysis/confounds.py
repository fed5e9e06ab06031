"""Measures beside the votes: do votes follow a clip's measured motion, and what is the
preference with the measures held equal? Pure statistics (numpy, statsmodels), no web, no SQL.

Input: `MeasuredVotes`, one row per vote with the two clips it compared (indices into the
study's measured clips, `ClipTable`). Only decisive first-showing votes enter (ties are left out,
as in the decisive win rate; the caller drops repeats), and a vote enters a fit only when both
of its clips have every measure that fit uses.

Three results:

* `measure_spreads`: each arm's distribution of every measure over its clips (median,
  quartiles, range).
* `measure_slopes`: per criterion and measure, the logistic regression of "the left clip won" on
  the difference in the measure (left minus right, in clip standard deviations) with an
  intercept for the side: `slope` is the change in the log-odds that a clip wins per standard
  deviation (over the study's clips) that it has more of the measure than the clip beside it.
* `adjusted_effects`: per criterion and arm pair (the focus arm against each opponent), the
  logistic model
      logit P(arm wins) = beta + delta * side + gamma . (measures of arm's clip - opponent's),
  side = +1 when the arm was on the left, -1 on the right; measure differences in clip standard
  deviations. `effect` = expit(beta): the arm's decisive win probability against the opponent
  for two clips with equal measures, sides balanced. `unadjusted_effect` is the same model
  without the measures, fitted on the same votes (so it is the side-balanced decisive win
  rate). Both come with prompt-clustered (sandwich) standard errors: every vote on a prompt
  compares the same two clips, so votes on a prompt are not independent.

Every fit is a statsmodels GLM (binomial, logit link). Standard errors are clustered by prompt
with the jackknife (CR3, `cluster_se`), intervals are beta +/- t(G-1) * SE with G the prompts
counted, mapped through expit: in the simulation (benchmarks/confounds.py) the plain cluster
sandwich (statsmodels' `cov_type="cluster"`, kept as `Fit.se_cr1`) covered the true effect in
93% of studies with 40 prompts and 90% with 16, at a nominal 95%. A fit that cannot be made
(too few prompts for its parameters, a measure without variation, perfect separation) gives
None, never NaN, and a note saying why.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from app.analysis.schemas import _Row

CONFIDENCE = 0.95
MIN_VOTES = 20  # decisive votes a fit needs
MIN_PROMPTS = 10  # prompts (clusters) a fit needs, and
EXTRA_PROMPTS = 4  # this many more than it has parameters
MAX_LOG_ODDS = 15.0  # a coefficient beyond this is separation, not an estimate


# --- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ClipTable:
    """The study's measured clips: `arm[i]` made clip i, `values[name][i]` is its measure `name`
    (NaN where it has none)."""

    arm: np.ndarray  # object array of arm names
    values: dict[str, np.ndarray]

    @classmethod
    def from_mapping(
        cls, arms: Mapping[Any, str], measures: Mapping[Any, Mapping[str, float | None]]
    ) -> tuple[ClipTable, dict[Any, int]]:
        """From `{clip_id: arm}` and `{clip_id: {measure: value}}`; also returns each clip id's
        index. Clips without any measure are kept (their values are NaN)."""
        ids = list(arms)
        index = {clip: i for i, clip in enumerate(ids)}
        names = sorted({name for values in measures.values() for name in values})
        values = {name: np.full(len(ids), np.nan) for name in names}
        for clip, measured in measures.items():
            i = index.get(clip)
            if i is None:
                continue
            for name, value in measured.items():
                values[name][i] = float(value) if value is not None else np.nan
        arm = np.array([arms[clip] for clip in ids], dtype=object)
        return cls(arm=arm, values=values), index

    @property
    def measures(self) -> tuple[str, ...]:
        """Measure names with at least one finite value."""
        return tuple(n for n, v in self.values.items() if np.isfinite(v).any())

    def scale(self, name: str) -> float | None:
        """The standard deviation of a measure over the clips that have it (None: no spread)."""
        v = self.values[name]
        v = v[np.isfinite(v)]
        if len(v) < 2:
            return None
        sd = float(np.std(v, ddof=1))
        return sd if sd > 0 else None


@dataclass(frozen=True, eq=False)
class MeasuredVotes:
    """Votes with the clips they compared: `left_clip` / `right_clip` index into `clips`;
    `choice` 0 = left, 1 = right, 2 = tie; `prompt` is the cluster (any integer code);
    `count` how many votes each row stands for (1 each, or a SQL `GROUP BY`'s counts: every
    result is the same for a row of count c as for c equal rows of count 1)."""

    clips: ClipTable
    criterion: np.ndarray  # object array of criterion keys
    prompt: np.ndarray
    left_clip: np.ndarray
    right_clip: np.ndarray
    choice: np.ndarray
    count: np.ndarray

    @classmethod
    def build(
        cls,
        clips: ClipTable,
        *,
        criterion: Sequence[str] | np.ndarray,
        prompt: Sequence[Any] | np.ndarray,
        left_clip: Sequence[int] | np.ndarray,
        right_clip: Sequence[int] | np.ndarray,
        choice: Sequence[int] | np.ndarray,
        count: Sequence[int] | np.ndarray | None = None,
    ) -> MeasuredVotes:
        n = len(choice)
        return cls(
            clips=clips,
            criterion=np.asarray(criterion, dtype=object),
            prompt=np.unique(np.asarray(prompt), return_inverse=True)[1].reshape(-1),
            left_clip=np.asarray(left_clip, dtype=np.int64),
            right_clip=np.asarray(right_clip, dtype=np.int64),
            choice=np.asarray(choice, dtype=np.int64),
            count=np.ones(n, dtype=np.int64) if count is None else np.asarray(count, np.int64),
        )

    def __len__(self) -> int:
        return int(self.choice.shape[0])

    def of(self, criterion: str) -> np.ndarray:
        """The row mask of one criterion's votes (computed once per criterion)."""
        cache = self.__dict__.setdefault("_criterion_rows", {})
        if criterion not in cache:
            cache[criterion] = self.criterion == criterion
        rows: np.ndarray = cache[criterion]
        return rows

    @property
    def left_arm(self) -> np.ndarray:
        return self.clips.arm[self.left_clip] if len(self) else np.zeros(0, dtype=object)

    @property
    def right_arm(self) -> np.ndarray:
        return self.clips.arm[self.right_clip] if len(self) else np.zeros(0, dtype=object)

    def difference(self, name: str, scale: float) -> np.ndarray:
        """The measure of the left clip minus the right clip's, in units of `scale`."""
        v = self.clips.values[name]
        out: np.ndarray = (v[self.left_clip] - v[self.right_clip]) / scale
        return out


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeasureSpread(_Row):
    """One arm's distribution of one measure over its measured clips."""

    arm: str
    measure: str
    n_clips: int
    median: float | None
    q1: float | None
    q3: float | None
    minimum: float | None
    maximum: float | None


@dataclass(frozen=True, slots=True)
class MeasureSlope(_Row):
    """How the chance that a clip wins moves with its lead in one measure, on one criterion.

    `slope`: log-odds per clip standard deviation (`scale`, in the measure's own units) of
    difference; `odds_ratio` = exp(slope); interval at `confidence` (prompt-clustered)."""

    criterion: str
    measure: str
    slope: float | None
    lower: float | None
    upper: float | None
    odds_ratio: float | None
    p_value: float | None
    scale: float | None
    n_votes: int
    n_prompts: int
    confidence: float


@dataclass(frozen=True, slots=True)
class AdjustedEffect(_Row):
    """`arm` against `opponent` on `criterion` with `covariates` held equal.

    `effect`, `lower`, `upper`: the arm's decisive win probability at equal measures (0..1),
    with its prompt-clustered interval; `unadjusted_*`: the same model without the measures,
    on the same votes. `log_odds` / `se` (and `unadjusted_*`) are the model's beta and its
    prompt-clustered jackknife standard error (`se_cr1`: the plain cluster sandwich, for
    comparison)."""

    criterion: str
    arm: str
    opponent: str
    covariates: tuple[str, ...]
    effect: float | None
    lower: float | None
    upper: float | None
    unadjusted_effect: float | None
    unadjusted_lower: float | None
    unadjusted_upper: float | None
    log_odds: float | None
    se: float | None
    se_cr1: float | None
    unadjusted_log_odds: float | None
    unadjusted_se: float | None
    n_votes: int
    n_prompts: int
    confidence: float

    JSON_KEYS = (
        "criterion",
        "arm",
        "opponent",
        "covariates",
        "effect",
        "lower",
        "upper",
        "unadjusted_effect",
    )

    def as_row(self) -> dict[str, Any]:
        row = _Row.as_row(self)
        row["covariates"] = " ".join(self.covariates)
        return row

    def to_json(self) -> dict[str, Any]:
        """The object of summary.json's `adjusted` list (exactly `JSON_KEYS`)."""
        return {
            key: list(self.covariates) if key == "covariates" else getattr(self, key)
            for key in self.JSON_KEYS
        }

    @property
    def shift(self) -> float | None:
        """effect - unadjusted_effect (what holding the measures equal changed)."""
        if self.effect is None or self.unadjusted_effect is None:
            return None
        return self.effect - self.unadjusted_effect


@dataclass(frozen=True)
class ConfoundSummary:
    """Every measure-related result of a study, and notes on what could not be fitted."""

    measures: tuple[str, ...]
    n_clips: int
    spreads: tuple[MeasureSpread, ...] = ()
    slopes: tuple[MeasureSlope, ...] = ()
    adjusted: tuple[AdjustedEffect, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    reason: str | None = None  # why there is nothing (no measures yet)


# --- the fits -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """Coefficients, their prompt-clustered standard errors (`se`: the jackknife, CR3, which
    the intervals use; `se_cr1`: statsmodels' `cov_type="cluster"`) and the prompts counted."""

    params: np.ndarray
    se: np.ndarray
    se_cr1: np.ndarray
    n_prompts: int

    def interval(self, k: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
        q = float(stats.t.ppf(0.5 + confidence / 2, df=max(self.n_prompts - 1, 1)))
        return float(self.params[k] - q * self.se[k]), float(self.params[k] + q * self.se[k])

    def p_value(self, k: int) -> float:
        t = abs(float(self.params[k] / self.se[k]))
        return float(2 * stats.t.sf(t, df=max(self.n_prompts - 1, 1)))


def cluster_logit(
    y: np.ndarray, x: np.ndarray, groups: np.ndarray, count: np.ndarray | None = None
) -> Fit | str:
    """Logistic regression of `y` (0/1, one per row, standing for `count` votes: default 1)
    on `x` (with its own constant column), with prompt-clustered standard errors; or a sentence
    saying why no fit is given.

    Votes with the same prompt and the same row of `x` (in these models: the same matchup and
    side) are fitted as one binomial row, so a fit costs the same at a thousand votes as at a
    million: statsmodels' GLM gives the estimate, and the scores and Hessian summed per prompt
    are exactly those of the vote-level model, so both standard errors equal the vote-level
    ones (`tests/test_confounds.py` checks `se_cr1` against statsmodels' vote-level `Logit`
    with `cov_type="cluster"`)."""
    import statsmodels.api as sm  # ~0.5 s to import: only where a fit is made

    codes = np.unique(groups, return_inverse=True)[1].reshape(-1)
    n_prompts = int(codes.max(initial=-1)) + 1
    k = x.shape[1]
    count = np.ones(len(y), dtype=np.int64) if count is None else count
    n = int(count.sum())
    if n < MIN_VOTES:
        return f"{n} decisive votes (a fit needs {MIN_VOTES})"
    if n_prompts < max(MIN_PROMPTS, k + EXTRA_PROMPTS):
        needed = max(MIN_PROMPTS, k + EXTRA_PROMPTS)
        return f"{n_prompts} prompts (a fit with {k} parameters needs {needed})"
    if y[count > 0].min() == y[count > 0].max():
        return "every decisive vote went the same way"
    design, cluster, trials, wins = _binomial_rows(y, x, codes, count)
    if np.linalg.matrix_rank(design) < k:
        return "a measure does not vary between the clips compared"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = sm.GLM(
                np.column_stack([wins, trials - wins]), design, family=sm.families.Binomial()
            ).fit()
        except (ValueError, np.linalg.LinAlgError) as error:  # pragma: no cover - defensive
            return f"the fit failed ({error})"
    params = np.asarray(result.params, dtype=float)
    if not np.isfinite(params).all() or np.abs(params).max() > MAX_LOG_ODDS:
        return "the votes separate perfectly (no finite estimate)"
    se = cluster_se(wins, trials, design, cluster, params)
    if se is None:
        return "one prompt alone carries a measure's variation"
    return Fit(params=params, se=se[0], se_cr1=se[1], n_prompts=n_prompts)


def _binomial_rows(
    y: np.ndarray, x: np.ndarray, codes: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (prompt, row of x) pairs (one sort by prompt then every column) with their
    votes and wins."""
    order = np.lexsort((*x.T[::-1], codes))
    sorted_x, sorted_codes = x[order], codes[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (sorted_codes[1:] != sorted_codes[:-1]) | (sorted_x[1:] != sorted_x[:-1]).any(
        axis=1
    )
    row_of = np.empty(len(order), dtype=np.int64)
    row_of[order] = np.cumsum(starts) - 1
    first = order[starts]
    design, cluster = x[first], codes[first]
    trials = np.bincount(row_of, weights=count, minlength=len(design))
    wins = np.bincount(row_of, weights=y * count, minlength=len(design))
    return design, cluster, trials, wins


def cluster_se(
    wins: np.ndarray,
    trials: np.ndarray,
    x: np.ndarray,
    codes: np.ndarray,
    params: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Prompt-clustered standard errors of a binomial logit fit: the one-step jackknife (CR3 of
    Bell and McCaffrey; MacKinnon, Nielsen and Webb 2023), each prompt's leave-one-out change of
    the estimate approximated by one Newton step, (H - H_g)^-1 s_g, with variance
    (G - 1) / G * sum_g of its outer products; and the plain sandwich (CR1, statsmodels'
    `cov_type="cluster"`: H^-1 (sum_g s_g s_g') H^-1 * G / (G - 1) * (N - 1) / (N - K), N the
    votes). The jackknife is wider when prompts are few or unequal, which the simulation
    (docs/statistics.md) shows is needed. None when dropping a prompt leaves the model
    unidentified."""
    g = int(codes.max()) + 1
    k = x.shape[1]
    n = float(trials.sum())
    p = 1 / (1 + np.exp(-(x @ params)))
    w = trials * p * (1 - p)
    hessian = (x * w[:, None]).T @ x
    scores = np.zeros((g, k))
    np.add.at(scores, codes, x * (wins - trials * p)[:, None])
    parts = np.zeros((g, k, k))
    np.add.at(parts, codes, np.einsum("ni,nj->nij", x * w[:, None], x))
    rest = hessian[None, :, :] - parts
    if (np.linalg.matrix_rank(rest) < k).any():
        return None
    steps = np.linalg.solve(rest, scores[:, :, None])[:, :, 0]
    cr3 = (g - 1) / g * (steps.T @ steps)
    bread = np.linalg.inv(hessian)
    cr1 = bread @ (scores.T @ scores) @ bread * g / (g - 1) * (n - 1) / (n - k)
    return (
        np.sqrt(np.clip(np.diag(cr3), 0, None)),
        np.sqrt(np.clip(np.diag(cr1), 0, None)),
    )


def _expit(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def _decisive(votes: MeasuredVotes, rows: np.ndarray) -> np.ndarray:
    out: np.ndarray = rows & (votes.choice != 2)
    return out


def _complete(votes: MeasuredVotes, names: Iterable[str]) -> np.ndarray:
    ok = np.ones(len(votes), dtype=bool)
    for name in names:
        v = votes.clips.values[name]
        ok &= np.isfinite(v[votes.left_clip]) & np.isfinite(v[votes.right_clip])
    return ok


def measure_spreads(clips: ClipTable, *, arms: Sequence[str]) -> tuple[MeasureSpread, ...]:
    """Each arm's median, quartiles and range of every measure (arms in `arms` order)."""
    out = []
    for name in clips.measures:
        values = clips.values[name]
        for arm in arms:
            v = values[(clips.arm == arm) & np.isfinite(values)]
            if len(v) == 0:
                out.append(MeasureSpread(arm, name, 0, None, None, None, None, None))
                continue
            q1, median, q3 = (float(q) for q in np.percentile(v, [25, 50, 75]))
            out.append(
                MeasureSpread(arm, name, len(v), median, q1, q3, float(v.min()), float(v.max()))
            )
    return tuple(out)


def measure_slopes(
    votes: MeasuredVotes,
    *,
    criteria: Sequence[str],
    confidence: float = CONFIDENCE,
) -> tuple[tuple[MeasureSlope, ...], tuple[str, ...]]:
    """Per criterion and measure: the logistic slope of "the left clip won" on the left clip's
    lead in the measure (clip standard deviations), with an intercept for the side."""
    slopes, notes = [], []
    for name in votes.clips.measures:
        scale = votes.clips.scale(name)
        for criterion in criteria:
            rows = _decisive(votes, votes.of(criterion) & _complete(votes, [name]))
            n, g = int(votes.count[rows].sum()), len(np.unique(votes.prompt[rows]))
            fit: Fit | str = "the measure does not vary between clips"
            if scale is not None:
                diff = votes.difference(name, scale)[rows]
                x = np.column_stack([np.ones(len(diff)), diff])
                y = (votes.choice[rows] == 0).astype(float)
                fit = cluster_logit(y, x, votes.prompt[rows], votes.count[rows])
            if isinstance(fit, str):
                notes.append(f"{criterion}, {name}: no slope: {fit}.")
                slope = MeasureSlope(criterion, name, None, None, None, None, None, scale, n, g,
                                     confidence)  # fmt: skip
            else:
                low, high = fit.interval(1, confidence)
                b = float(fit.params[1])
                slope = MeasureSlope(criterion, name, b, low, high, math.exp(b), fit.p_value(1),
                                     scale, n, g, confidence)  # fmt: skip
            slopes.append(slope)
    return tuple(slopes), tuple(notes)


def adjusted_effects(
    votes: MeasuredVotes,
    *,
    criteria: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    covariates: Sequence[str],
    confidence: float = CONFIDENCE,
) -> tuple[tuple[AdjustedEffect, ...], tuple[str, ...]]:
    """Per criterion and (arm, opponent) pair: the arm's decisive win probability with
    `covariates` held equal, beside the same model without them (see the module docstring)."""
    covariates = tuple(covariates)
    scales = {name: votes.clips.scale(name) for name in covariates}
    flat = [name for name, s in scales.items() if s is None]
    left, right = votes.left_arm, votes.right_arm
    complete = _complete(votes, covariates)
    out, notes = [], []
    for arm, opponent in pairs:
        arm_left = (left == arm) & (right == opponent)
        arm_right = (left == opponent) & (right == arm)
        for criterion in criteria:
            rows = _decisive(votes, (arm_left | arm_right) & votes.of(criterion))
            rows &= complete
            n, g = int(votes.count[rows].sum()), len(np.unique(votes.prompt[rows]))
            side = np.where(arm_left[rows], 1.0, -1.0)
            y = ((votes.choice[rows] == 0) == arm_left[rows]).astype(float)
            groups, count = votes.prompt[rows], votes.count[rows]
            base = np.column_stack([np.ones(len(y)), side])
            plain = cluster_logit(y, base, groups, count)
            adjusted: Fit | str
            if flat:
                adjusted = f"no spread in {', '.join(flat)}"
            else:
                diffs = [
                    side * votes.difference(name, scale)[rows]  # arm's clip minus opponent's
                    for name, scale in scales.items()
                    if scale is not None
                ]
                adjusted = cluster_logit(y, np.column_stack([base, *diffs]), groups, count)
            label = f"{criterion}, {arm} vs {opponent}"
            if isinstance(plain, str):
                notes.append(f"{label}: no unadjusted effect: {plain}.")
            if isinstance(adjusted, str):
                notes.append(f"{label}, holding {', '.join(covariates)} equal: {adjusted}.")
            out.append(
                _effect(criterion, arm, opponent, covariates, adjusted, plain, n, g, confidence)
            )
    return tuple(out), tuple(notes)


def _effect(
    criterion: str,
    arm: str,
    opponent: str,
    covariates: tuple[str, ...],
    adjusted: Fit | str,
    plain: Fit | str,
    n: int,
    g: int,
    confidence: float,
) -> AdjustedEffect:
    def scaled(fit: Fit | str) -> tuple[float | None, ...]:
        if isinstance(fit, str):
            return (None,) * 6
        low, high = fit.interval(0, confidence)
        beta = float(fit.params[0])
        return _expit(beta), _expit(low), _expit(high), beta, float(fit.se[0]), float(fit.se_cr1[0])

    effect, lower, upper, beta, se, se_cr1 = scaled(adjusted)
    u_effect, u_lower, u_upper, u_beta, u_se, _ = scaled(plain)
    return AdjustedEffect(
        criterion=criterion,
        arm=arm,
        opponent=opponent,
        covariates=covariates,
        effect=effect,
        lower=lower,
        upper=upper,
        unadjusted_effect=u_effect,
        unadjusted_lower=u_lower,
        unadjusted_upper=u_upper,
        log_odds=beta,
        se=se,
        se_cr1=se_cr1,
        unadjusted_log_odds=u_beta,
        unadjusted_se=u_se,
        n_votes=n,
        n_prompts=g,
        confidence=confidence,
    )


def confound_summary(
    votes: MeasuredVotes,
    *,
    arms: Sequence[str],
    criteria: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    covariate_sets: Sequence[Sequence[str]],
    confidence: float = CONFIDENCE,
) -> ConfoundSummary:
    """Spreads, slopes and the adjusted effects for every covariate set whose measures the
    clips have (sets naming a measure no clip has are skipped, with a note)."""
    clips = votes.clips
    measures = clips.measures
    if not measures:
        return ConfoundSummary(
            measures=(), n_clips=len(clips.arm), reason="No clip of this study is measured yet."
        )
    slopes, notes = measure_slopes(votes, criteria=criteria, confidence=confidence)
    adjusted: list[AdjustedEffect] = []
    all_notes = list(notes)
    for names in dict.fromkeys(tuple(s) for s in covariate_sets):
        missing = [n for n in names if n not in measures]
        if not names or missing:
            if missing:
                all_notes.append(f"Not adjusted for {', '.join(names)}: no clip has {missing[0]}.")
            continue
        effects, notes = adjusted_effects(
            votes, criteria=criteria, pairs=pairs, covariates=names, confidence=confidence
        )
        adjusted.extend(effects)
        all_notes.extend(notes)
    return ConfoundSummary(
        measures=measures,
        n_clips=int(np.isfinite(np.column_stack(list(clips.values.values()))).any(axis=1).sum()),
        spreads=measure_spreads(clips, arms=arms),
        slopes=slopes,
        adjusted=tuple(adjusted),
        notes=tuple(all_notes),
    )


__all__ = [
    "CONFIDENCE",
    "AdjustedEffect",
    "ClipTable",
    "ConfoundSummary",
    "Fit",
    "MeasureSlope",
    "MeasureSpread",
    "MeasuredVotes",
    "adjusted_effects",
    "cluster_logit",
    "confound_summary",
    "measure_slopes",
    "measure_spreads",
]
