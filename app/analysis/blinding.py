"""The blinding audit's statistics: can what an evaluator observes without judging the pixels
tell which arm is on which side of a pair?

Each unit is one matchup as it is served: the observable features of its left and right clip
(bytes, dimensions, frames, duration, palette size, response time) and whether the matchup's
first arm was on the left; each pair of arms is fitted separately. A logistic regression on
the left-minus-right differences of the scaled features, *without an intercept* (swapping the
sides negates the differences and flips the answer, so a feature equal on both sides says
nothing and predicts a coin: p = 0.5), L2-penalized like scikit-learn's default (C = 1), is
fitted by Newton's method.

Accuracy is cross-validated over folds of prompts (a prompt's matchups never sit on both sides of
a fold: with more than two arms a prompt's clips recur in several matchups), each matchup
predicted once by a model that never saw its prompt. A prediction of exactly 0.5 (no
information) counts half right. The interval is Wilson's score interval over the matchups (the
held-out predictions are treated as independent trials). Chance is 50%. All features together
also get a permutation test that needs no such assumption: with no leak, a matchup's
differences are as likely negated whatever its answer, so the cross-validation is rerun with
random matchups' differences negated and the p-value is the share that scores as high.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# What an evaluator's browser can observe of a clip without judging its pixels.
FEATURES: tuple[str, ...] = (
    "served_bytes",
    "width",
    "height",
    "frames",
    "duration_ms",
    "palette_size",
    "response_ms",
)
FEATURE_LABELS: dict[str, str] = {
    "served_bytes": "served bytes",
    "width": "width",
    "height": "height",
    "frames": "frame count",
    "duration_ms": "duration (sum of frame delays)",
    "palette_size": "palette size (global colour table)",
    "response_ms": "response time",
}
ALL = "all"  # the row of every feature together
DEFAULT_FOLDS = 10
PERMUTATIONS = 200
CHANCE = 0.5
DASH = "\u2013"  # an en dash between an interval's bounds
Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class AuditUnit:
    """One matchup as served: its prompt (the fold group), each side's features, whether its
    first arm was shown on the left (the answer the classifier is asked for), and its pair of
    arms (with three arms or more, a bigger clip may mean the first arm in one pair and the
    second in another: each pair is fitted on its own)."""

    group: str
    left: Mapping[str, float]
    right: Mapping[str, float]
    first_on_left: bool
    pair: str = ""  # the matchup's two arms: each pair of arms gets a model of its own


@dataclass(frozen=True, slots=True)
class AuditRow:
    feature: str  # a FEATURES name, or ALL
    correct: float  # held-out predictions right (a coin's 0.5 counts half)
    n: int
    low: float
    high: float
    p_value: float | None = None  # permutation test, all features together only

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else math.nan

    @property
    def label(self) -> str:
        return "all features together" if self.feature == ALL else FEATURE_LABELS[self.feature]


@dataclass(frozen=True, slots=True)
class BlindingAudit:
    rows: tuple[AuditRow, ...]  # one per feature, then ALL
    n_matchups: int
    n_prompts: int
    folds: int

    @property
    def overall(self) -> AuditRow:
        return self.rows[-1]

    @property
    def enough(self) -> bool:
        """Whether there were matchups of at least two prompts to cross-validate over."""
        return self.folds >= 2


def audit(
    units: Sequence[AuditUnit],
    *,
    features: Sequence[str] = FEATURES,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    permutations: int = PERMUTATIONS,
) -> BlindingAudit:
    """Cross-validated accuracy of predicting the arm on each side, per feature and from all
    `features` together (the last row, with its permutation p-value)."""
    n = len(units)
    groups = [u.group for u in units]
    fold_of, k = grouped_folds(groups, folds=folds, seed=seed)
    y = np.array([u.first_on_left for u in units], dtype=float)
    x = np.array(
        [[float(u.left[f]) - float(u.right[f]) for f in features] for u in units], dtype=float
    ).reshape(n, len(features))
    pairs = np.array([u.pair for u in units], dtype=object)
    folds_of = np.asarray(fold_of, dtype=int)

    def accuracy_of(chosen: np.ndarray, answers: np.ndarray) -> float:
        correct = 0.0
        for pair in sorted(set(pairs.tolist())) if k >= 2 else ():
            mine = pairs == pair
            correct += cross_validated(chosen[mine], answers[mine], folds_of[mine].tolist(), k)
        return correct

    rows = []
    for column, name in [*((np.array([i]), f) for i, f in enumerate(features)), (None, ALL)]:
        chosen = x if column is None else x[:, column]
        correct = accuracy_of(chosen, y)
        used = n if k >= 2 else 0
        low, high = wilson(correct, used)
        p_value = None
        if column is None and used:
            p_value = permutation_p(x, y, correct, accuracy_of, permutations, seed=seed)
        rows.append(AuditRow(name, correct, used, low, high, p_value))
    return BlindingAudit(rows=tuple(rows), n_matchups=n, n_prompts=len(set(groups)), folds=k)


def permutation_p(
    x: np.ndarray,
    y: np.ndarray,
    correct: float,
    accuracy_of: Callable[[np.ndarray, np.ndarray], float],
    permutations: int,
    *,
    seed: int = 0,
) -> float:
    """One-sided p-value of `correct` under "the observables say nothing about the sides": then
    a matchup's left-minus-right differences are as likely negated whichever arm was on the
    left, so the whole cross-validation is rerun with the differences of random matchups
    negated (the answers kept), `permutations` times."""
    rng = np.random.default_rng(seed)
    as_high = 0
    for _ in range(permutations):
        flip = rng.random(len(y)) < 0.5
        as_high += accuracy_of(np.where(flip[:, None], -x, x), y) >= correct - 1e-9
    return (1 + as_high) / (1 + permutations)


def grouped_folds(groups: Sequence[str], *, folds: int, seed: int = 0) -> tuple[list[int], int]:
    """A fold number per unit, whole groups to a fold (groups shuffled with `seed`, then dealt
    round-robin), and the number of folds: min(folds, number of groups)."""
    names = sorted(set(groups))
    random.Random(seed).shuffle(names)
    k = min(folds, len(names))
    fold = {name: i % k for i, name in enumerate(names)} if k else {}
    return [fold[g] for g in groups], k


def cross_validated(x: np.ndarray, y: np.ndarray, fold_of: Sequence[int], k: int) -> float:
    """Held-out predictions right, summed over `k` folds (a prediction of exactly 0.5 counts
    half); features standardized on each training fold."""
    folds = np.asarray(fold_of)
    correct = 0.0
    for fold in range(k):
        test, train = folds == fold, folds != fold
        if not test.any():
            continue
        mean, scale = standardizer(x[train])
        weights = fit_logistic((x[train] - mean) / scale, y[train])
        p = predict((x[test] - mean) / scale, weights)
        # No intercept: a zero difference predicts exactly 0.5 whatever the weights.
        correct += float(np.sum(np.where(p == 0.5, 0.5, (p > 0.5) == (y[test] == 1.0))))
    return correct


def standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale of each column; constant columns are scaled by 1. The centre is zero:
    differences are symmetric around zero when sides are random, and centring would give a
    feature equal on both sides (all zeros) a nonzero value after all."""
    scale = np.sqrt(np.mean(x**2, axis=0)) if len(x) else np.ones(x.shape[1])
    return np.zeros(x.shape[1]), np.where(scale > 0, scale, 1.0)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, c: float = 1.0, max_iter: int = 100, tol: float = 1e-10
) -> np.ndarray:
    """Weights of a logistic regression without intercept, penalty ||w||^2 / (2c) (scikit-learn's
    C), by Newton's method."""
    weights = np.zeros(x.shape[1])
    for _ in range(max_iter):
        p = predict(x, weights)
        gradient = x.T @ (p - y) + weights / c
        hessian = (x.T * (p * (1 - p))) @ x + np.eye(x.shape[1]) / c
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if float(np.max(np.abs(step), initial=0.0)) < tol:
            break
    return weights


def predict(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    z = np.clip(x @ weights, -500, 500)
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def wilson(correct: float, n: int, *, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion correct / n (nan, nan when n is 0)."""
    if n == 0:
        return math.nan, math.nan
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def interval_text(row: AuditRow) -> str:
    """The row's interval in percent, e.g. `45.0` en dash `57.6%`."""
    return f"{100 * row.low:.1f}{DASH}{100 * row.high:.1f}%"


def summary_line(result: BlindingAudit) -> str:
    """The audit's verdict in one line (the CLI's last line)."""
    row = result.overall
    if not result.enough:
        return (
            "Blinding audit: too few prompts with matchups of done clips to cross-validate "
            f"({result.n_prompts}; at least 2 needed), chance is 50%"
        )
    return (
        f"Blinding audit: arm predicted from served bytes and metadata with "
        f"{100 * row.accuracy:.1f}% accuracy (95% CI {interval_text(row)}, {row.n} matchups, "
        f"permutation p {row.p_value:.2f}), chance is 50%"
    )
