"""Straight-lining: an evaluator who answers the same way whatever the pair (always left, always
tie), tested from their answer counts alone.

Sides are counterbalanced per matchup (each clip is on the left about as often as on the right),
so an honest evaluator's decisive answers fall on the left about half the time whatever arm
they prefer, however strongly: a real preference does not make left-lining. Two exact binomial
tests per evaluator, on one answer per trial:

* sides: left among decisive (left + right) answers against 1/2, two-sided (always left, always
  right);
* ties: ties among all answers against `TIE_CEILING`, one-sided above it (always tie).

An evaluator is flagged when either p-value is below `alpha` / 2 (the two tests share `alpha`),
once they have answered at least `min_trials` trials. With the defaults (alpha 0.001, 12
trials) an always-left or always-tie evaluator is flagged from the 12th trial (p = 2^-11 and
2^-12), and an honest one is flagged with probability at most 0.001 per evaluator.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.analysis.pairwise import binomial_test

STRAIGHT_LINE_ALPHA = 0.001
STRAIGHT_LINE_MIN_TRIALS = 12
# Ties in more than this share of trials are not expected of anyone watching: two arms alike
# enough for that are tied by the study's result, not by one evaluator.
TIE_CEILING = 0.5


@dataclass(frozen=True, slots=True)
class StraightLining:
    """One evaluator's answer habits and the two tests' p-values (None: no decisive answer, or
    no answer)."""

    left: int
    right: int
    ties: int
    side_p: float | None
    tie_p: float | None
    flagged: bool
    reason: str | None

    @property
    def trials(self) -> int:
        return self.left + self.right + self.ties


def straight_lining(
    left: int,
    right: int,
    ties: int,
    *,
    alpha: float = STRAIGHT_LINE_ALPHA,
    min_trials: int = STRAIGHT_LINE_MIN_TRIALS,
    tie_ceiling: float = TIE_CEILING,
) -> StraightLining:
    """The straight-lining tests of one evaluator's left, right and tie answers (one per trial)."""
    if min(left, right, ties) < 0:
        raise ValueError(f"counts must be >= 0, got {left}, {right}, {ties}")
    if not 0 < alpha < 1 or not 0 < tie_ceiling < 1:
        raise ValueError(f"alpha and tie_ceiling must be in (0, 1), got {alpha}, {tie_ceiling}")
    n = left + right + ties
    side_p = binomial_test(left, left + right, 0.5) if left + right else None
    tie_p = binomial_test(ties, n, tie_ceiling, alternative="greater") if n else None
    reasons = []
    if n >= min_trials:
        if side_p is not None and side_p < alpha / 2:
            side = "left" if left > right else "right"
            reasons.append(
                f"straight-lining: {max(left, right)} of {left + right} decisive answers "
                f"{side} (p = {side_p:.2g})"
            )
        if tie_p is not None and tie_p < alpha / 2:
            reasons.append(f"straight-lining: {ties} of {n} answers tie (p = {tie_p:.2g})")
    return StraightLining(
        left=left,
        right=right,
        ties=ties,
        side_p=side_p,
        tie_p=tie_p,
        flagged=bool(reasons),
        reason="; ".join(reasons) or None,
    )


__all__ = [
    "STRAIGHT_LINE_ALPHA",
    "STRAIGHT_LINE_MIN_TRIALS",
    "TIE_CEILING",
    "StraightLining",
    "straight_lining",
]
