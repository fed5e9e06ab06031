"""Sample size for the two-sided exact binomial (sign) test, and the peeking warning.

The question a researcher asks mid-study: "if the preference I see now is the truth, how many
more decisive votes until the sign test has 80% power?". Answer:

* `exact_power(n, rate, alpha)`: exact power of the two-sided exact binomial test of p = 0.5 at
  level alpha with n decisive votes when the true decisive win rate is `rate`. The rejection
  region is {k <= c} U {k >= n - c} with c the largest integer such that 2 * P(X <= c) <= alpha
  under p = 0.5, i.e. exactly where `scipy.stats.binomtest(k, n).pvalue <= alpha`.
* `required_decisive_votes(rate, ...)`: the smallest n from which the exact power stays >= the
  target (exact power is a saw-tooth in n; "stays" avoids an n whose neighbour n + 1 falls back
  below the target). For very small effects (normal-approximation n above `max_exact`) the
  arcsine normal approximation is used instead (Cohen's h = 2 asin sqrt(rate) - 2 asin sqrt(0.5),
  both tails, as statsmodels' `NormalIndPower(...).solve_power(ratio=0)`); the result says which.
  The approximation ignores the conservativeness of the discrete exact test and comes out about
  1-2% lower than the exact figure in that range.

Caveats, in `PEEKING_WARNING`: the observed effect is a noisy (and, once significant, inflated)
estimate, so this is a planning figure, not a promise; and repeatedly testing while votes come
in inflates the false-positive rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, overload

import numpy as np
from scipy import optimize, special

from app.analysis.schemas import PowerResult, SequentialNote

PEEKING_WARNING = (
    "Peeking inflates false positives: checking the p-values again and again as votes arrive and "
    "stopping as soon as one drops below 0.05 makes the real false-positive rate several times "
    "larger than 5% (about 14% with 5 looks, over 25% with 50). Fix the number of decisive votes "
    "in advance (the figures below are a planning aid, computed at the effect seen so far, which "
    "is itself noisy and overstated when it happens to look significant), analyse once at that "
    "number, or use a group-sequential design that spends alpha across the looks "
    "(e.g. Lan-DeMets O'Brien-Fleming spending). To decide while watching, read the verdicts "
    "instead: their anytime-valid intervals hold at every look."
)


def _z(q: float) -> float:
    return float(special.ndtri(q))


def _critical_lower(n: np.ndarray, alpha: float) -> np.ndarray:
    """Largest c with 2 * P(X <= c | n, 0.5) <= alpha (-1 when no such c), vectorised.

    Starts a little below the normal approximation of the quantile and steps up while the next
    count is still in the rejection region (a handful of steps; `binom.ppf` is 20x slower)."""
    n = np.asarray(n, dtype=np.int64)
    limit = alpha * (1 + 1e-12)
    z = float(special.ndtri(1 - alpha / 2))
    c: np.ndarray = np.floor(n / 2 - z * np.sqrt(n) / 2).astype(np.int64) - 4
    c = np.clip(c, -1, np.maximum(n - 1, -1))
    for _ in range(64):  # never more than a few in practice
        nxt = c + 1
        up = (nxt <= n) & (2 * special.bdtr(np.maximum(nxt, 0), n, 0.5) <= limit)
        if not up.any():
            break
        c = np.where(up, nxt, c)
    while True:  # guard: the start was already inside the acceptance region
        bad = (c >= 0) & (2 * special.bdtr(np.maximum(c, 0), n, 0.5) > limit)
        if not bad.any():
            return c
        c = np.where(bad, c - 1, c)


@overload
def exact_power(n: int | np.integer, rate: float, alpha: float = 0.05) -> float: ...
@overload
def exact_power(n: np.ndarray, rate: float, alpha: float = 0.05) -> np.ndarray: ...
def exact_power(
    n: int | np.integer | np.ndarray, rate: float, alpha: float = 0.05
) -> float | np.ndarray:
    """Power of the two-sided exact binomial test of p = 0.5 with n trials at true `rate`."""
    n_arr = np.atleast_1d(np.asarray(n, dtype=np.int64))
    c = _critical_lower(n_arr, alpha)
    valid = (c >= 0) & (n_arr > 0)
    cc = np.maximum(c, 0)
    lower = np.where(valid, special.bdtr(cc, n_arr, rate), 0.0)
    # P(X >= n - c) = P(X > n - c - 1)
    upper = np.where(valid, special.bdtrc(np.maximum(n_arr - cc - 1, 0), n_arr, rate), 0.0)
    out = lower + upper
    return float(out[0]) if np.ndim(n) == 0 else out


def normal_power(n: float, rate: float, alpha: float = 0.05) -> float:
    """Arcsine normal approximation of the two-sided power (both tails)."""
    h = abs(2 * math.asin(math.sqrt(rate)) - 2 * math.asin(math.sqrt(0.5)))
    z = _z(1 - alpha / 2)
    return float(special.ndtr(h * math.sqrt(n) - z) + special.ndtr(-h * math.sqrt(n) - z))


def _normal_n(rate: float, alpha: float, power: float) -> float:
    h = abs(2 * math.asin(math.sqrt(rate)) - 2 * math.asin(math.sqrt(0.5)))
    guess = ((_z(1 - alpha / 2) + _z(power)) / h) ** 2

    def f(n: float) -> float:
        return normal_power(n, rate, alpha) - power

    if f(1e-9) >= 0:
        return 1e-9
    return float(optimize.brentq(f, 1e-9, max(2 * guess, 10.0), xtol=1e-10, rtol=1e-12))


def required_decisive_votes(
    rate: float | None,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    method: Literal["auto", "exact", "normal"] = "auto",
    max_exact: int = 10_000,
) -> tuple[int | None, Literal["exact", "normal"] | None]:
    """Decisive votes needed for `power` when the true decisive win rate is `rate`.

    Returns (None, None) when rate is 0.5 (no effect: no n suffices) or not a number;
    a rate of exactly 0 or 1 is clipped to 1e-9 / 1 - 1e-9.
    """
    if rate is None or not math.isfinite(rate) or abs(rate - 0.5) < 1e-12:
        return None, None
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must lie in (0, 1): alpha={alpha}, power={power}")
    rate = min(max(rate, 1e-9), 1 - 1e-9)
    n_norm = _normal_n(rate, alpha, power)
    if method == "normal" or (method == "auto" and n_norm > max_exact):
        return max(1, math.ceil(n_norm - 1e-9)), "normal"
    # Exact power crosses the target close to the normal-approximation n: search a window
    # around it, widening it when the crossing is not inside.
    lo = max(1, int(0.9 * n_norm) - 20)
    hi = int(1.15 * n_norm) + 60
    while True:
        ns = np.arange(lo, hi + 1)
        ok = exact_power(ns, rate, alpha) >= power
        if not ok[-1]:
            hi *= 2
            continue
        # smallest n such that every n' in [n, hi] reaches the target
        stays = np.logical_and.accumulate(ok[::-1])[::-1]
        first = int(np.argmax(stays))
        if first == 0 and lo > 1:
            lo = max(1, int(0.8 * lo) - 20)
            continue
        return int(ns[first]), "exact"


def power_result(
    *,
    criterion: str,
    arm: str,
    opponent: str,
    wins: int,
    losses: int,
    ties: int,
    alpha: float = 0.05,
    power: float = 0.8,
) -> PowerResult:
    """How many more decisive votes (and votes, counting ties at the observed tie rate)."""
    n = wins + losses
    rate = wins / n if n else None
    needed, method = (
        (None, None) if rate is None else required_decisive_votes(rate, alpha=alpha, power=power)
    )
    more = None if needed is None else max(0, needed - n)
    more_votes = None
    if more is not None:
        total = n + ties
        decisive_share = n / total if total else 1.0
        more_votes = math.ceil(more / decisive_share) if decisive_share > 0 else None
    return PowerResult(
        criterion=criterion,
        arm=arm,
        opponent=opponent,
        n_decisive=n,
        observed_rate=rate,
        effect=None if rate is None else rate - 0.5,
        alpha=alpha,
        target_power=power,
        needed_decisive=needed,
        additional_decisive=more,
        additional_votes=more_votes,
        method=method,
    )


def alpha_spending(
    fractions: Sequence[float],
    *,
    alpha: float = 0.05,
    kind: Literal["obrien-fleming", "pocock"] = "obrien-fleming",
) -> tuple[float, ...]:
    """Cumulative two-sided alpha that may be spent by each information fraction t in (0, 1]
    (Lan & DeMets 1983): O'Brien-Fleming-type 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)), or
    Pocock-type alpha * ln(1 + (e - 1) t). Both spend exactly alpha at t = 1. These are the
    spending functions only; the per-look boundaries follow from them by the usual recursive
    integration (e.g. R's gsDesign / rpact) when a sequential design is wanted."""
    out = []
    for t in fractions:
        if not 0 < t <= 1:
            raise ValueError(f"information fraction must lie in (0, 1]: {t}")
        if kind == "obrien-fleming":
            out.append(float(2 - 2 * special.ndtr(_z(1 - alpha / 2) / math.sqrt(t))))
        elif kind == "pocock":
            out.append(float(alpha * math.log(1 + (math.e - 1) * t)))
        else:
            raise ValueError(f"unknown spending function {kind!r}")
    return tuple(out)


def sequential_note(alpha: float = 0.05, looks: int = 5) -> SequentialNote:
    """The peeking warning plus an O'Brien-Fleming spending table for `looks` equal looks."""
    fractions = [(i + 1) / looks for i in range(looks)]
    spent = alpha_spending(fractions, alpha=alpha)
    return SequentialNote(
        warning=PEEKING_WARNING, alpha_spending=tuple(zip(fractions, spent, strict=True))
    )
