"""Per-criterion (and per-theme) preference statistics from the count cube: the cheap part.

For each arm pair and criterion:

* wins / ties / losses of `arm` against `opponent`, tie rate = ties / all votes;
* decisive win rate = wins / (wins + losses) with a Wilson score interval;
* two-sided exact binomial (sign) test of "decisive win rate = 0.5";
* Holm step-down adjustment. Family for the overall table: the criteria of one arm pair.
  Family for the per-theme table: all theme x criterion cells of one arm pair (the heatmap), since
  that is the set a reader scans for the most striking cell;
* optionally a non-inferiority test against a margin (see `non_inferiority`).

Position bias: per criterion, the share of decisive votes that went to the left clip, tested
against 0.5 with the exact binomial test. Under independent side randomisation and no side
preference, "left won" is Bernoulli(0.5) whatever the arms' true quality, so this test is exact
even though votes on one prompt are correlated. (Criteria are not pooled: the six votes of one
trial share their sides, so a pooled count would not be binomial.)

Independence: the sign test and the Wilson interval treat each vote as an independent draw. Votes
on the same prompt (by different evaluators) and by the same evaluator are correlated, so these
intervals are somewhat too narrow when prompts differ a lot; `bradley_terry.bootstrap_summary`
gives prompt-cluster bootstrap intervals that do not need that assumption.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Literal

import numpy as np
from scipy import special, stats

from app.analysis.counts import FIRST, SECOND, TIE, VoteCounts, VoteTable
from app.analysis.power import PEEKING_WARNING, power_result
from app.analysis.schemas import (
    ArmPreference,
    NonInferiorityResult,
    PairwiseResult,
    PairwiseSummary,
    PositionBiasResult,
    VoteRecord,
)

INDEPENDENCE_NOTE = (
    "Wilson intervals and sign tests treat votes as independent; votes on the same prompt are "
    "correlated, so compare with the prompt-cluster bootstrap intervals before drawing "
    "conclusions."
)


# ------------------------------------------------------------------------ elementary statistics
def _none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _wilson(k: np.ndarray, n: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    z = float(special.ndtri(0.5 + confidence / 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z * z / n
        center = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
        lo = np.clip(center - half, 0.0, 1.0)
        hi = np.clip(center + half, 0.0, 1.0)
    bad = n <= 0
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion (None when n == 0)."""
    if n <= 0:
        return None
    lo, hi = _wilson(np.array([successes]), np.array([n]), confidence)
    return float(lo[0]), float(hi[0])


def _sign_test(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Two-sided exact binomial test of p = 0.5 (NaN where n == 0), vectorised."""
    k = np.asarray(k, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    m = np.minimum(k, n - k)
    with np.errstate(invalid="ignore"):
        p = np.minimum(1.0, 2.0 * stats.binom.cdf(m, n, 0.5))
    return np.where(n > 0, p, np.nan)


def binomial_test(
    k: int,
    n: int,
    p: float = 0.5,
    alternative: Literal["two-sided", "greater", "less"] = "two-sided",
) -> float | None:
    """Exact binomial test p-value (None when n == 0). Same definition as
    `scipy.stats.binomtest` (two-sided: sum of outcomes no more likely than k)."""
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"k={k} outside 0..n={n}")
    if alternative == "greater":
        return float(stats.binom.sf(k - 1, n, p))
    if alternative == "less":
        return float(stats.binom.cdf(k, n, p))
    if alternative != "two-sided":
        raise ValueError(f"unknown alternative {alternative!r}")
    if p == 0.5:
        return float(_sign_test(np.array([k]), np.array([n]))[0])
    return float(stats.binomtest(k, n, p).pvalue)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm (1979) step-down adjusted p-values; None entries are not part of the family."""
    p = np.array([np.nan if v is None else float(v) for v in p_values], dtype=float)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    adj = np.empty(m)
    if m:
        order = np.argsort(q, kind="stable")
        stepped = np.maximum.accumulate((m - np.arange(m)) * q[order])
        adj[order] = np.minimum(stepped, 1.0)
    out: list[float | None] = [None] * len(p)
    for i, v in zip(np.flatnonzero(ok), adj, strict=True):
        out[int(i)] = float(v)
    return out


def clopper_pearson_lower(k: int, n: int, confidence: float = 0.95) -> float | None:
    """One-sided Clopper-Pearson lower confidence bound: P(X >= k | bound) = 1 - confidence."""
    if n <= 0:
        return None
    if k <= 0:
        return 0.0
    return float(stats.beta.ppf(1 - confidence, k, n - k + 1))


def non_inferiority(
    wins: int, losses: int, margin: float, alpha: float = 0.05
) -> NonInferiorityResult:
    """Test that `arm` is no worse than `opponent` by more than `margin` (decisive win rates).

    p = P(arm wins | decisive vote). H0: p <= 0.5 - margin, H1: p > 0.5 - margin.
    One-sided exact binomial test, p_value = P(X >= wins | n = wins + losses, 0.5 - margin);
    lower_bound = one-sided (1 - alpha) Clopper-Pearson bound; non-inferior iff p_value <= alpha,
    equivalently 0.5 - margin <= lower_bound. Ties carry no information on this scale.
    """
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must lie in [0, 0.5): {margin}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1): {alpha}")
    n = wins + losses
    null = 0.5 - margin
    p = binomial_test(wins, n, null, "greater") if n else None
    return NonInferiorityResult(
        margin=margin,
        alpha=alpha,
        null_rate=null,
        p_value=p,
        lower_bound=clopper_pearson_lower(wins, n, 1 - alpha),
        non_inferior=bool(p is not None and p <= alpha),
    )


# ------------------------------------------------------------------------------- the tables
def _resolve_pairs(
    counts: VoteCounts, pairs: Iterable[tuple[str, str]] | None
) -> list[tuple[str, str, int, bool]]:
    """(arm, opponent, canonical pair index, arm is the pair's first arm)."""
    canonical = {pair: p for p, pair in enumerate(counts.pairs)}
    out = []
    for arm, opponent in counts.pairs if pairs is None else pairs:
        if (arm, opponent) in canonical:
            out.append((arm, opponent, canonical[(arm, opponent)], True))
        elif (opponent, arm) in canonical:
            out.append((arm, opponent, canonical[(opponent, arm)], False))
        else:
            raise ValueError(f"unknown arm pair ({arm!r}, {opponent!r}); arms: {counts.arms}")
    return out


def _oriented(
    outcomes: np.ndarray, p: int, first: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = outcomes[..., p, FIRST if first else SECOND]
    l_ = outcomes[..., p, SECOND if first else FIRST]
    t = outcomes[..., p, TIE]
    return w, t, l_


def _cells(
    w: np.ndarray, t: np.ndarray, l_: np.ndarray, confidence: float
) -> dict[str, np.ndarray]:
    n_dec = w + l_
    n = n_dec + t
    lo, hi = _wilson(w, n_dec, confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(n_dec > 0, w / np.maximum(n_dec, 1), np.nan)
        tie_rate = np.where(n > 0, t / np.maximum(n, 1), np.nan)
    return {
        "w": w,
        "t": t,
        "l": l_,
        "n": n,
        "n_dec": n_dec,
        "rate": rate,
        "lo": lo,
        "hi": hi,
        "p": _sign_test(w, n_dec),
        "tie_rate": tie_rate,
    }


def _result(
    c: dict[str, np.ndarray],
    idx: tuple[int, ...],
    p_holm: float | None,
    *,
    criterion: str,
    theme: str | None,
    arm: str,
    opponent: str,
    confidence: float,
    margin: float | None,
    alpha: float,
) -> PairwiseResult:
    w, t, l_ = int(c["w"][idx]), int(c["t"][idx]), int(c["l"][idx])
    return PairwiseResult(
        criterion=criterion,
        theme=theme,
        arm=arm,
        opponent=opponent,
        wins=w,
        ties=t,
        losses=l_,
        n_votes=w + t + l_,
        n_decisive=w + l_,
        win_rate=_none(c["rate"][idx]),
        ci_low=_none(c["lo"][idx]),
        ci_high=_none(c["hi"][idx]),
        confidence=confidence,
        p_value=_none(c["p"][idx]),
        p_holm=p_holm,
        tie_rate=_none(c["tie_rate"][idx]),
        non_inferiority=None if margin is None else non_inferiority(w, l_, margin, alpha),
    )


def pairwise_summary(
    counts: VoteCounts,
    *,
    pairs: Iterable[tuple[str, str]] | None = None,
    confidence: float = 0.95,
    alpha: float = 0.05,
    margin: float | None = None,
    power: float = 0.8,
    by_theme: bool = True,
    pair_weighted: bool = False,
) -> PairwiseSummary:
    """Every count-based statistic of a study (no resampling; milliseconds).

    `pairs`: (arm, opponent) orientations to report, default every (arms[i], arms[j]), i < j.
    `margin`: when set, each overall and per-theme result carries a non-inferiority test of
    `arm` against `opponent` at that margin and one-sided level `alpha`.
    Power figures: two-sided exact sign test at `alpha`, target `power`, at the observed effect.
    `pair_weighted`: each arm's pooled preference weights its opponents equally (design weights
    for adaptive allocation, see `arm_preference`).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1): {confidence}")
    resolved = _resolve_pairs(counts, pairs)
    outcomes = counts.outcomes()  # [C, T, P, 3]
    overall_oc = outcomes.sum(axis=1)  # [C, P, 3]
    crits, themes = counts.criteria, counts.themes

    overall: list[PairwiseResult] = []
    theme_rows: list[PairwiseResult] = []
    power_rows = []
    for arm, opponent, p, first in resolved:
        c = _cells(*_oriented(overall_oc, p, first), confidence)
        adj = holm([_none(v) for v in c["p"]])
        for ci, crit in enumerate(crits):
            overall.append(
                _result(
                    c,
                    (ci,),
                    adj[ci],
                    criterion=crit,
                    theme=None,
                    arm=arm,
                    opponent=opponent,
                    confidence=confidence,
                    margin=margin,
                    alpha=alpha,
                )
            )
            power_rows.append(
                power_result(
                    criterion=crit,
                    arm=arm,
                    opponent=opponent,
                    wins=int(c["w"][ci]),
                    losses=int(c["l"][ci]),
                    ties=int(c["t"][ci]),
                    alpha=alpha,
                    power=power,
                )
            )
        if by_theme and themes:
            # [C, T] -> [T, C]: one Holm family over the whole heatmap of this pair
            w, t, l_ = (a.T for a in _oriented(outcomes, p, first))
            ct = _cells(w, t, l_, confidence)
            flat = holm([_none(v) for v in ct["p"].ravel()])
            for ti, theme in enumerate(themes):
                for ci, crit in enumerate(crits):
                    theme_rows.append(
                        _result(
                            ct,
                            (ti, ci),
                            flat[ti * len(crits) + ci],
                            criterion=crit,
                            theme=theme,
                            arm=arm,
                            opponent=opponent,
                            confidence=confidence,
                            margin=margin,
                            alpha=alpha,
                        )
                    )

    sides = counts.sides()  # [C, 3]
    lo, hi = _wilson(sides[:, 0], sides[:, 0] + sides[:, 1], confidence)
    pvals = _sign_test(sides[:, 0], sides[:, 0] + sides[:, 1])
    position = tuple(
        PositionBiasResult(
            criterion=crit,
            left=int(sides[ci, 0]),
            right=int(sides[ci, 1]),
            ties=int(sides[ci, 2]),
            n_decisive=int(sides[ci, 0] + sides[ci, 1]),
            left_rate=_none(sides[ci, 0] / max(sides[ci, 0] + sides[ci, 1], 1))
            if sides[ci, 0] + sides[ci, 1]
            else None,
            ci_low=_none(lo[ci]),
            ci_high=_none(hi[ci]),
            p_value=_none(pvals[ci]),
        )
        for ci, crit in enumerate(crits)
    )

    warnings = [PEEKING_WARNING, INDEPENDENCE_NOTE]
    biased_adj = holm([r.p_value for r in position])
    biased = [
        r.criterion
        for r, q in zip(position, biased_adj, strict=True)
        if q is not None and q < alpha
    ]
    if biased:
        warnings.append(
            "Position bias: evaluators favour one side on "
            + ", ".join(biased)
            + f" (Holm-adjusted p < {alpha}). Check that sides are counterbalanced."
        )
    if counts.n_votes == 0:
        warnings.append("No votes yet.")

    return PairwiseSummary(
        arms=counts.arms,
        criteria=crits,
        themes=themes,
        n_votes=counts.n_votes,
        alpha=alpha,
        overall=tuple(overall),
        by_theme=tuple(theme_rows),
        position_bias=position,
        arm_preference=arm_preference(counts, confidence=confidence, pair_weighted=pair_weighted),
        power=tuple(power_rows),
        warnings=tuple(warnings),
    )


def arm_preference(
    counts: VoteCounts, *, confidence: float = 0.95, pair_weighted: bool = False
) -> tuple[ArmPreference, ...]:
    """Each arm against all other arms pooled (per criterion): what the speed chart shows.

    Pooled by votes, an opponent weighs by its share of the arm's decisive votes: under uniform
    allocation about equal. With `pair_weighted` (adaptive allocation, which makes the shares
    unequal on purpose), the win rate is the mean of the arm's decisive win rates against each
    opponent it has votes against, every opponent weighing the same, with a normal interval
    from the per-pair binomial variances (each rate shrunk by half a vote towards 1/2 for the
    variance, so a pair at 0 or 1 still has one); wins, ties and losses stay the raw counts."""
    if pair_weighted:
        return _arm_preference_weighted(counts, confidence=confidence)
    oc = counts.outcomes().sum(axis=1)  # [C, P, 3]
    k = len(counts.arms)
    wins = np.zeros((len(counts.criteria), k), dtype=np.int64)
    losses = np.zeros_like(wins)
    ties = np.zeros_like(wins)
    for p, (a, b) in enumerate(counts.pairs):
        i, j = counts.arms.index(a), counts.arms.index(b)
        wins[:, i] += oc[:, p, FIRST]
        losses[:, i] += oc[:, p, SECOND]
        wins[:, j] += oc[:, p, SECOND]
        losses[:, j] += oc[:, p, FIRST]
        ties[:, i] += oc[:, p, TIE]
        ties[:, j] += oc[:, p, TIE]
    n_dec = wins + losses
    lo, hi = _wilson(wins, n_dec, confidence)
    out = []
    for ci, crit in enumerate(counts.criteria):
        for ai, arm in enumerate(counts.arms):
            n = int(n_dec[ci, ai])
            out.append(
                ArmPreference(
                    criterion=crit,
                    arm=arm,
                    wins=int(wins[ci, ai]),
                    ties=int(ties[ci, ai]),
                    losses=int(losses[ci, ai]),
                    n_decisive=n,
                    win_rate=wins[ci, ai] / n if n else None,
                    ci_low=_none(lo[ci, ai]),
                    ci_high=_none(hi[ci, ai]),
                )
            )
    return tuple(out)


def _arm_preference_weighted(counts: VoteCounts, *, confidence: float) -> tuple[ArmPreference, ...]:
    oc = counts.outcomes().sum(axis=1)  # [C, P, 3]
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    out = []
    for ci, crit in enumerate(counts.criteria):
        for arm in counts.arms:
            wins = losses = ties = 0
            rates: list[float] = []
            variances: list[float] = []
            for p, (a, b) in enumerate(counts.pairs):
                if arm not in (a, b):
                    continue
                first, second, tie = (int(x) for x in oc[ci, p])
                won, lost = (first, second) if arm == a else (second, first)
                wins, losses, ties = wins + won, losses + lost, ties + tie
                n = won + lost
                if n:
                    rates.append(won / n)
                    shrunk = (won + 0.5) / (n + 1)
                    variances.append(shrunk * (1 - shrunk) / n)
            m = len(rates)
            rate = sum(rates) / m if m else None
            half = z * math.sqrt(sum(variances)) / m if m else None
            out.append(
                ArmPreference(
                    criterion=crit,
                    arm=arm,
                    wins=wins,
                    ties=ties,
                    losses=losses,
                    n_decisive=wins + losses,
                    win_rate=rate,
                    ci_low=None if rate is None or half is None else max(0.0, rate - half),
                    ci_high=None if rate is None or half is None else min(1.0, rate + half),
                )
            )
    return tuple(out)


def summarize(
    votes: Iterable[VoteRecord] | VoteTable | VoteCounts,
    *,
    arms: Sequence[str] | None = None,
    criteria: Sequence[str] | None = None,
    include_repeats: bool = False,
    exclude_flagged: bool = False,
    exclude_evaluators: Collection[Any] = (),
    **options: Any,
) -> PairwiseSummary:
    """`pairwise_summary` from whatever the caller holds: records (needs `arms`, `criteria`),
    a `VoteTable` (filters apply) or a `VoteCounts`. Extra keyword options go to
    `pairwise_summary` (pairs, confidence, alpha, margin, power, by_theme)."""
    dropped = 0
    if isinstance(votes, VoteCounts):
        counts = votes
    else:
        if not isinstance(votes, VoteTable):
            if arms is None or criteria is None:
                raise ValueError("arms and criteria are required with vote records")
            votes = VoteTable.from_records(list(votes), arms=arms, criteria=criteria)
        dropped = votes.n_dropped
        counts = votes.counts(
            include_repeats=include_repeats,
            exclude_flagged=exclude_flagged,
            exclude_evaluators=exclude_evaluators,
        )
    summary = pairwise_summary(counts, **options)
    if dropped:
        note = (
            f"{dropped} vote(s) ignored: unknown arm or criterion, invalid choice, "
            "or the same arm on both sides."
        )
        summary = _with_warning(summary, note)
    return summary


def _with_warning(summary: PairwiseSummary, note: str) -> PairwiseSummary:
    import dataclasses

    return dataclasses.replace(summary, warnings=(*summary.warnings, note))
