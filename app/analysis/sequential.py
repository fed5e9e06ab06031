"""Anytime-valid verdicts: confidence sequences for decisive win rates, read after every vote.

What is computed. For every hypothesis of the study's plan (criterion x focus arm x opponent,
`app.analysis.plan`), a confidence sequence (CS) for the focus arm's decisive win rate p: a
sequence of intervals that contains p at every moment simultaneously with probability at least
1 - alpha_h, so the dashboard may be read after every vote and a verdict taken whenever one
appears. The plan's family-wise alpha is split equally over its hypotheses (Bonferroni:
alpha_h = alpha / H, valid whatever the dependence between criteria and pairs), so with
probability at least 1 - alpha no interval of the plan ever misses its win rate, and every
verdict below is a consequence of the intervals:

* superiority: `superior` when lower > 1/2, `inferior` when upper < 1/2;
* non-inferiority at margin m: `non_inferior` when lower > 1/2 - m, `inferior` (worse by more
  than the margin) when upper < 1/2 - m;
* else `undecided`. Bounds are the running intersection of the sequence, so they only narrow and
  a verdict, once given, stays.

The estimand. p = E[wins] / E[wins + losses] for one vote on a prompt drawn uniformly from the
study's fixed prompt set, by an evaluator drawn from the population the study recruits from
(ties excluded from the rate: a tie is neither a win nor a loss; it is counted in `votes`).
The prompt set is fixed, not a sample: p is about these prompts. Evaluators are the random
units.

Dependence, and the units. Votes by the same evaluator are correlated (an evaluator who likes
the fast arm on one prompt tends to on the next), so votes are not independent draws and a
vote-by-vote sequence would be too narrow. The sequence is therefore built over evaluators: an
evaluator enters as one unit, with all of their first-showing votes on the hypothesis's
criterion and arm pair, when they finish (the caller gives that order: completion order; every
evaluator once the study is closed). Given the assignment (which matchups and sides each
evaluator gets; it depends on coverage counts, never on answers), evaluators are independent
draws, so each unit's conditional mean given every earlier unit is the population value for its
matchups. Votes on the same prompt by different evaluators are not a problem for p: the prompt
set is fixed, so a prompt's effect is part of what p averages, not noise; the balanced
assignment (least-rated matchup first, ties at random) keeps every prompt equally represented
among the counted votes up to one round of coverage, so the average the sequence tracks is the
uniform average over the prompt set up to that imbalance. The simulation in
tests/test_sequential.py (prompt and evaluator heterogeneity, ties, careless raters, evaluators
finishing out of order) checks the resulting type-I error.

The construction (Waudby-Smith & Ramdas, "Estimating means of bounded random variables by
betting", JRSS-B 2024: the hedged capital process with predictable-plug-in bets, exactly
`confseq.betting.hedged_cs` with its defaults). For a candidate value c of p, unit i with W_i
wins, L_i losses and T_i ties (n_i votes) gives

    x_i(c) = (W_i + c * T_i) / n_i  in [0, 1],

whose conditional mean is c exactly when p = c (E[W - c (W + L)] = 0 is p = c; ties are scored
at the value under test, so they carry no evidence either way). Two capital processes bet on
x_i(c) - c being positive and negative, with bets from the running mean and variance of the
earlier units (a predictable mixture, truncated at 1 / (2c) and 1 / (2 (1 - c))); c is rejected
once half the larger capital reaches 1 / alpha_h (Ville's inequality). The interval at each
moment is the set of unrejected c on a grid of step 1 / `breaks` (padded by one step, as
confseq does). Without ties and with one vote per unit, x_i(c) is the Bernoulli outcome and the
bounds equal confseq's `hedged_cs` (tests/test_sequential.py compares them).

Cost. O(grid x units) per hypothesis, vectorised in blocks of units; `Monitor` keeps each
hypothesis's state (a few arrays over the grid), so new units cost O(grid) each: the dashboard
extends it as evaluators finish instead of recomputing.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from app.analysis.counts import FIRST, SECOND, TIE, VoteTable
from app.analysis.plan import DEFAULT_ALPHA, Hypothesis, Plan
from app.analysis.schemas import Verdict, VerdictStatus, VerdictSummary

BREAKS = 1000  # grid step 1/1000 of win rate (confseq's default)
BLOCK = 256  # units per vectorised block (at most)
MIN_BLOCK = 16
WINDOW_MARGIN = 3  # grid steps kept outside the running intersection (see HedgedSequence)
THETA = 0.5  # weight of each side of the hedged capital process
TRUNCATION = 0.5  # bets truncated at TRUNCATION / c and TRUNCATION / (1 - c)
PRIOR_MEAN, PRIOR_VARIANCE, FAKE_OBS = 0.5, 0.25, 1  # the bets' regularised mean and variance

METHOD_NOTE = (
    "Confidence sequences (hedged betting capital, Waudby-Smith & Ramdas) over evaluators as "
    "they finish: valid at every look, so the verdicts may be read after every vote. The plan's "
    "alpha is split equally over its hypotheses. Ties are left out of the win rate."
)


def default_plan(
    *, criteria: Sequence[str], arms: Sequence[str], focus: str, alpha: float = DEFAULT_ALPHA
) -> Plan:
    """The plan of a study without an [analysis] table: two-sided superiority of `focus`
    against every other arm on every criterion, all primary, never stop."""
    if focus not in arms:
        raise ValueError(f"unknown focus arm {focus!r}: the arms are {list(arms)}")
    hypotheses = tuple(
        Hypothesis(c, focus, other, "superiority", 0.0, True)
        for c in criteria
        for other in arms
        if other != focus
    )
    return Plan(alpha=alpha, hypotheses=hypotheses, stop="never", budget=None, adaptive=False)


def hypothesis_alpha(plan: Plan) -> float:
    """The level each hypothesis is tested at: the plan's alpha split equally (Bonferroni)."""
    return plan.alpha / max(len(plan.hypotheses), 1)


# ------------------------------------------------------------------------------ the sequence


def _grid(breaks: int) -> np.ndarray:
    # The same expression as confseq's `cs_from_martingale`, so the grids are identical.
    grid: np.ndarray = np.arange(0, 1 + 1 / breaks, step=1 / breaks)
    return grid


@dataclass
class HedgedSequence:
    """The hedged capital confidence sequence of one hypothesis, extended unit by unit.

    State per grid value c: the running sum of x(c) and of squared deviations (for the bets),
    the last variance estimate, and the two capital processes; plus the running intersection
    [lower, upper] and what was counted.

    `window`: after each block of units, drop the grid values more than WINDOW_MARGIN steps
    outside the running intersection. They can no longer narrow it (its bounds only move
    inwards), so the bounds stay the same unless the set of unrejected values stops being an
    interval around them, and late in a study only the values near the estimate are
    computed. The result is a confidence sequence either way: the true value, when it is never
    rejected, stays inside the window."""

    alpha: float
    breaks: int = BREAKS
    window: bool = True
    t: int = 0
    votes: int = 0
    lower: float = 0.0
    upper: float = 1.0
    grid: np.ndarray = field(init=False, repr=False)
    _sum: np.ndarray = field(init=False, repr=False)
    _sq: np.ndarray = field(init=False, repr=False)
    _var: np.ndarray = field(init=False, repr=False)
    _pos: np.ndarray = field(init=False, repr=False)
    _neg: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1): {self.alpha}")
        if self.breaks < 2:
            raise ValueError(f"breaks must be at least 2: {self.breaks}")
        self.grid = _grid(self.breaks)  # the values still computed (all, or the window)
        g = self.grid.shape[0]
        self._sum = np.zeros(g)
        self._sq = np.zeros(g)
        self._var = np.full(g, PRIOR_VARIANCE)
        self._pos = np.ones(g)
        self._neg = np.ones(g)
        self._bet = 2 * math.log(1 / (self.alpha * THETA))

    def extend(
        self, wins: np.ndarray, losses: np.ndarray, ties: np.ndarray, *, trace: bool = False
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Add units (parallel arrays of counts, in the order they finished; units without a
        vote are skipped). With `trace`, also return the bounds at each added unit before the
        running intersection (confseq's `running_intersection=False` output)."""
        w = np.asarray(wins, dtype=float)
        lo_ = np.asarray(losses, dtype=float)
        ti = np.asarray(ties, dtype=float)
        n = w + lo_ + ti
        keep = n > 0
        if not keep.all():
            w, lo_, ti, n = w[keep], lo_[keep], ti[keep], n[keep]
        self.votes += int(n.sum())
        lows, highs = [], []
        start = 0
        while start < n.shape[0]:
            # blocks grow with t: the window narrows early, numpy works on long rows late
            end = start + min(BLOCK, max(MIN_BLOCK, self.t))
            low, high = self._block(w[start:end], ti[start:end], n[start:end])
            start = end
            if trace:
                lows.append(low)
                highs.append(high)
            if self.window:
                self._narrow()
        if trace:
            empty = np.zeros(0)
            return (
                np.concatenate(lows) if lows else empty,
                np.concatenate(highs) if highs else empty,
            )
        return None

    def _block(
        self, w: np.ndarray, ties: np.ndarray, n: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        c = self.grid[:, None]
        k = n.shape[0]
        t = self.t + np.arange(1, k + 1)
        x = (w[None, :] + c * ties[None, :]) / n[None, :]
        # Sums carried in as a first column: the same order of additions as one long cumsum.
        sums = np.cumsum(np.concatenate([self._sum[:, None], x], axis=1), axis=1)[:, 1:]
        mean = np.minimum((FAKE_OBS * PRIOR_MEAN + sums) / (t + FAKE_OBS), 1)
        sq = np.cumsum(np.concatenate([self._sq[:, None], np.power(x - mean, 2)], axis=1), axis=1)[
            :, 1:
        ]
        var = (FAKE_OBS * PRIOR_VARIANCE + sq) / (t + FAKE_OBS)
        var_before = np.concatenate([self._var[:, None], var[:, :-1]], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            bets = np.sqrt(self._bet / (t * np.log(1 + t) * var_before))
            bets[np.isnan(bets)] = 0
            # truncation: up to TRUNCATION / c betting on x > c, TRUNCATION / (1 - c) below
            up = np.maximum(np.minimum(bets, TRUNCATION / c), -TRUNCATION / (1 - c))
            down = np.maximum(np.minimum(bets, TRUNCATION / (1 - c)), -TRUNCATION / c)
        diff = x - c
        with np.errstate(over="ignore", under="ignore"):
            pos = np.cumprod(np.concatenate([self._pos[:, None], 1 + up * diff], axis=1), axis=1)
            neg = np.cumprod(np.concatenate([self._neg[:, None], 1 - down * diff], axis=1), axis=1)
        pos, neg = pos[:, 1:], neg[:, 1:]
        capital = np.maximum(THETA * pos, (1 - THETA) * neg)
        inside = capital <= 1 / self.alpha
        any_in = inside.any(axis=0)
        first = np.argmax(inside, axis=0)
        last = self.grid.shape[0] - 1 - np.argmax(inside[::-1], axis=0)
        step = 1 / self.breaks
        low = np.where(any_in, np.maximum(0, self.grid[first] - step), 0.0)
        high = np.where(any_in, np.minimum(1, self.grid[last] + step), 1.0)
        self.lower = max(self.lower, float(low.max(initial=0.0)))
        self.upper = min(self.upper, float(high.min(initial=1.0)))
        self._sum, self._sq, self._var = sums[:, -1], sq[:, -1], var[:, -1]
        self._pos, self._neg = pos[:, -1], neg[:, -1]
        self.t += k
        return low, high

    def _narrow(self) -> None:
        if self.lower > self.upper:
            return  # missed (see `bounds`): keep every value
        step = 1 / self.breaks
        keep = (self.grid >= self.lower - WINDOW_MARGIN * step) & (
            self.grid <= self.upper + WINDOW_MARGIN * step
        )
        if keep.all() or not keep.any():
            return
        self.grid = self.grid[keep]
        self._sum, self._sq, self._var = self._sum[keep], self._sq[keep], self._var[keep]
        self._pos, self._neg = self._pos[keep], self._neg[keep]

    def bounds(self) -> tuple[float, float]:
        """The running intersection. Empty only if the sequence has already missed (an event
        of probability at most alpha): then both bounds are its midpoint."""
        if self.lower > self.upper:
            mid = (self.lower + self.upper) / 2
            return mid, mid
        return self.lower, self.upper


def confidence_sequence(
    wins: Sequence[int] | np.ndarray,
    losses: Sequence[int] | np.ndarray,
    ties: Sequence[int] | np.ndarray | None = None,
    *,
    alpha: float = DEFAULT_ALPHA,
    breaks: int = BREAKS,
    running_intersection: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds after each unit (units given in order, one count each).

    One vote per unit and no ties: `confseq.betting.hedged_cs(x, alpha, breaks=breaks,
    running_intersection=...)` on the Bernoulli outcomes x, bound for bound."""
    w = np.asarray(wins, dtype=float)
    lo_ = np.asarray(losses, dtype=float)
    ti = np.zeros_like(w) if ties is None else np.asarray(ties, dtype=float)
    if np.any(w + lo_ + ti <= 0):
        raise ValueError("every unit needs at least one vote")
    seq = HedgedSequence(alpha=alpha, breaks=breaks, window=False)
    traced = seq.extend(w, lo_, ti, trace=True)
    assert traced is not None
    low, high = traced
    if running_intersection:
        return np.maximum.accumulate(low), np.minimum.accumulate(high)
    return low, high


# ---------------------------------------------------------------------------------- the units


@dataclass(frozen=True, eq=False)
class UnitCounts:
    """First-showing vote counts per evaluator, in the order the evaluators finished:
    `cube[unit, criterion, pair, outcome]` with pairs and outcomes as in `VoteCounts` (pair k
    of `arm_pairs(arms)`; 0 first arm wins, 1 second arm wins, 2 tie)."""

    arms: tuple[str, ...]
    criteria: tuple[str, ...]
    evaluators: tuple[Any, ...]  # the units, in order
    cube: np.ndarray

    @classmethod
    def from_table(
        cls,
        table: VoteTable,
        *,
        order: Sequence[Any] | None = None,
        exclude_evaluators: Collection[Any] = (),
    ) -> UnitCounts:
        """The units of a vote table: repeats left out (as the fixed-sample tables do), the
        evaluators in `exclude_evaluators` (e.g. the flagged ones) too. `order`: the evaluators
        that count, in the order they finished (others wait); None: every evaluator of the
        table, in the order of their labels."""
        table = table.where(table.mask(exclude_evaluators=exclude_evaluators))
        shape = (len(table.evaluators), len(table.criteria), len(table.pairs), 3)
        idx = ((table.evaluator * shape[1] + table.criterion) * shape[2] + table.pair) * 3
        full = np.bincount(idx + table.outcome, minlength=int(np.prod(shape))).reshape(shape)
        labels = list(table.evaluators)
        drop = {e for e in exclude_evaluators} | {str(e) for e in exclude_evaluators}
        if order is None:
            chosen = [e for e in labels if e not in drop and str(e) not in drop]
        else:
            chosen = [e for e in order if e not in drop and str(e) not in drop]
        index = {e: i for i, e in enumerate(labels)}
        rows = [index[e] for e in chosen if e in index]
        counted = tuple(e for e in chosen if e in index)
        return cls(table.arms, table.criteria, counted, full[np.array(rows, dtype=np.int64)])

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[tuple[Any, str, str, str, str, int]],
        *,
        order: Sequence[Any],
        arms: Sequence[str],
        criteria: Sequence[str],
    ) -> UnitCounts:
        """From `(evaluator, criterion, arm, other arm, winner, count)` rows, `winner` being an
        arm's name or "tie" (a SQL GROUP BY gives them); `order`: the units, in order."""
        arms, criteria = tuple(arms), tuple(criteria)
        arm_ix = {a: i for i, a in enumerate(arms)}
        crit_ix = {c: i for i, c in enumerate(criteria)}
        pair_ix = {pair: p for p, pair in enumerate(combinations(range(len(arms)), 2))}
        unit_ix = {e: i for i, e in enumerate(order)}
        cube = np.zeros((len(order), len(criteria), len(pair_ix), 3), dtype=np.int64)
        for evaluator, crit, arm_x, arm_y, winner, n in rows:
            u, c = unit_ix.get(evaluator), crit_ix.get(crit)
            i, j = arm_ix.get(arm_x), arm_ix.get(arm_y)
            if u is None or c is None or i is None or j is None or i == j:
                continue
            first, second = min(i, j), max(i, j)
            if winner == "tie":
                outcome = TIE
            elif arm_ix.get(winner) == first:
                outcome = FIRST
            elif arm_ix.get(winner) == second:
                outcome = SECOND
            else:
                continue
            cube[u, c, pair_ix[(first, second)], outcome] += int(n)
        return cls(arms, criteria, tuple(order), cube)

    def outcomes(self, hypothesis: Hypothesis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(wins, losses, ties) of `hypothesis.arm` per unit on its criterion and pair."""
        if hypothesis.criterion not in self.criteria:
            raise ValueError(f"unknown criterion {hypothesis.criterion!r}: {self.criteria}")
        for arm in (hypothesis.arm, hypothesis.opponent):
            if arm not in self.arms:
                raise ValueError(f"unknown arm {arm!r}: the arms are {self.arms}")
        if hypothesis.arm == hypothesis.opponent:
            raise ValueError(f"an arm against itself: {hypothesis.arm!r}")
        i, j = self.arms.index(hypothesis.arm), self.arms.index(hypothesis.opponent)
        p = list(combinations(range(len(self.arms)), 2)).index((min(i, j), max(i, j)))
        cells = self.cube[:, self.criteria.index(hypothesis.criterion), p, :]
        first = i < j
        wins = cells[:, FIRST if first else SECOND]
        losses = cells[:, SECOND if first else FIRST]
        return wins, losses, cells[:, TIE]

    def tail(self, start: int) -> UnitCounts:
        """The units from position `start` on."""
        return UnitCounts(self.arms, self.criteria, self.evaluators[start:], self.cube[start:])


# ------------------------------------------------------------------------------- the verdicts


def status_of(hypothesis: Hypothesis, lower: float, upper: float) -> VerdictStatus:
    """The verdict an interval gives (see the module docstring for the rules)."""
    eps = 1e-12
    if hypothesis.hypothesis == "non_inferiority":
        bound = 0.5 - hypothesis.margin
        if lower > bound + eps:
            return "non_inferior"
        if upper < bound - eps:
            return "inferior"
        return "undecided"
    if lower > 0.5 + eps:
        return "superior"
    if upper < 0.5 - eps:
        return "inferior"
    return "undecided"


class Monitor:
    """The plan's sequences, kept current as units arrive (one `HedgedSequence` per hypothesis)."""

    def __init__(self, plan: Plan, *, breaks: int = BREAKS) -> None:
        self.plan = plan
        self.alpha = hypothesis_alpha(plan)
        self.sequences = [HedgedSequence(alpha=self.alpha, breaks=breaks) for _ in plan.hypotheses]
        self.units: list[Any] = []
        self.votes = 0

    def extend(self, units: UnitCounts) -> None:
        """Add units that finished after every unit added so far."""
        for hypothesis, seq in zip(self.plan.hypotheses, self.sequences, strict=True):
            seq.extend(*units.outcomes(hypothesis))
        self.units.extend(units.evaluators)
        self.votes += int(units.cube.sum())

    def verdicts(self) -> list[Verdict]:
        out = []
        for h, seq in zip(self.plan.hypotheses, self.sequences, strict=True):
            lower, upper = seq.bounds()
            out.append(
                Verdict(
                    criterion=h.criterion,
                    arm=h.arm,
                    opponent=h.opponent,
                    hypothesis=h.hypothesis,
                    margin=float(h.margin),
                    status=status_of(h, lower, upper),
                    lower=float(lower),
                    upper=float(upper),
                    votes=seq.votes,
                    alpha=self.alpha,
                )
            )
        return out

    def summary(self) -> VerdictSummary:
        return VerdictSummary(
            verdicts=tuple(self.verdicts()),
            alpha=self.plan.alpha,
            evaluators=len(self.units),
            votes=self.votes,
        )


def verdicts(
    votes: VoteTable | UnitCounts,
    plan: Plan,
    *,
    order: Sequence[Any] | None = None,
    exclude_evaluators: Collection[Any] = (),
    breaks: int = BREAKS,
) -> list[Verdict]:
    """One verdict per hypothesis of `plan`, in its order.

    From a `VoteTable`: repeats left out, `exclude_evaluators` (the flagged evaluators, as the
    dashboard's filter) too; `order` lists the evaluators that have finished, in the order they
    did (None: all, in label order). A `UnitCounts` is taken as it is."""
    units = (
        votes
        if isinstance(votes, UnitCounts)
        else UnitCounts.from_table(votes, order=order, exclude_evaluators=exclude_evaluators)
    )
    monitor = Monitor(plan, breaks=breaks)
    monitor.extend(units)
    return monitor.verdicts()


__all__ = [
    "BREAKS",
    "METHOD_NOTE",
    "HedgedSequence",
    "Monitor",
    "UnitCounts",
    "confidence_sequence",
    "default_plan",
    "hypothesis_alpha",
    "status_of",
    "verdicts",
]
