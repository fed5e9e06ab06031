"""What the plan still needs: whether it is decided, and which arm pairs new trials should go to.

Both read only the current verdicts (`app.analysis.sequential`), so the stop check, the adaptive
allocation and the simulation benchmark (benchmarks/stopping.py) decide the same way.

Decided. `compare = "focus"`: every primary hypothesis has a verdict. `compare = "best"`: on
every primary criterion the best arm is identified (one arm superior to every other), or no arm
can be any more (every arm has lost to another: the preferences have no single best arm).

Wanted pairs (adaptive allocation). The arm pairs whose trials can still change the answer:
- `focus`: the pairs of an undecided primary hypothesis;
- `best`: per primary criterion whose best arm is not identified, the undecided pairs with at
  least one arm that has lost to none (two arms that have each lost to another arm cannot be
  the best; their order does not matter for the question asked).
When nothing primary is open, the same for the secondary hypotheses; when nothing at all is,
None: allocate uniformly. The rating service gives a new trial a matchup of a wanted pair
when the evaluator has one left, else any (see `app.rating.service`), least covered first
within each group, so coverage stays balanced across the prompts of every pair.

Why the verdicts stay valid. Each hypothesis's sequence is built over evaluators as they finish,
on that hypothesis's arm pair only. With adaptive allocation, which pairs an evaluator is shown
depends on the verdicts of evaluators who finished before, never on the evaluator's own answers
or on anyone still rating; so given that assignment, an evaluator's votes on a pair are drawn
from the population as before, and the least-covered rule within the pair keeps the prompts
equally represented. The unit's conditional mean is unchanged; only how many votes a unit brings
on a pair changes, which the betting construction allows (a unit with no votes on the pair
carries no evidence; see docs/statistics.md).

Design weights. Pooling over pairs (an arm's win rate against all other arms) weights each pair
by its share of votes, which adaptive allocation makes unequal; `pair_weighted` statistics
(`app.analysis.pairwise.arm_preference(..., pair_weighted=True)`) give each pair equal weight,
the share it has under uniform allocation.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.analysis.plan import Hypothesis, Plan
from app.analysis.schemas import Verdict

ArmPair = frozenset[str]


def _key(h: Hypothesis | Verdict) -> tuple[str, str, str]:
    return (h.criterion, h.arm, h.opponent)


def _by_hypothesis(plan: Plan, verdicts: Sequence[Verdict]) -> list[tuple[Hypothesis, str]]:
    status = {_key(v): v.status for v in verdicts}
    return [(h, status.get(_key(h), "undecided")) for h in plan.hypotheses]


def losers(plan: Plan, verdicts: Sequence[Verdict], *, criterion: str) -> set[str]:
    """Arms that have lost to another arm on `criterion` (an `inferior` verdict against them)."""
    out: set[str] = set()
    for h, status in _by_hypothesis(plan, verdicts):
        if h.criterion != criterion:
            continue
        if status == "inferior":
            out.add(h.arm)
        elif status == "superior":
            out.add(h.opponent)
    return out


def arms_of(plan: Plan) -> list[str]:
    """The plan's arms, in the order they first appear in its hypotheses."""
    return list(dict.fromkeys(a for h in plan.hypotheses for a in (h.arm, h.opponent)))


def best_arm(plan: Plan, verdicts: Sequence[Verdict], *, criterion: str) -> str | None:
    """The arm superior to every other arm on `criterion`, once the verdicts say so."""
    beaten = losers(plan, verdicts, criterion=criterion)
    arms = arms_of(plan)
    standing = [a for a in arms if a not in beaten]
    if len(standing) != 1:
        return None
    winner = standing[0]
    for h, status in _by_hypothesis(plan, verdicts):
        if h.criterion == criterion and winner in (h.arm, h.opponent):
            won = status == ("superior" if h.arm == winner else "inferior")
            if not won:
                return None
    return winner


def _primary_criteria(plan: Plan) -> list[str]:
    return list(dict.fromkeys(h.criterion for h in plan.primary))


def criterion_decided(plan: Plan, verdicts: Sequence[Verdict], *, criterion: str) -> bool:
    """`best`: the best arm is identified on `criterion`, or every arm has lost to another."""
    if best_arm(plan, verdicts, criterion=criterion) is not None:
        return True
    return len(losers(plan, verdicts, criterion=criterion)) == len(arms_of(plan))


def decided(plan: Plan, verdicts: Sequence[Verdict]) -> bool:
    """Whether the plan's primary question is answered (see the module docstring)."""
    if not plan.primary:
        return False
    if plan.compare == "best":
        return all(criterion_decided(plan, verdicts, criterion=c) for c in _primary_criteria(plan))
    return all(status != "undecided" for h, status in _by_hypothesis(plan, verdicts) if h.primary)


def _open_pairs(plan: Plan, verdicts: Sequence[Verdict], *, primary: bool) -> set[ArmPair]:
    pairs: set[ArmPair] = set()
    rows = [(h, s) for h, s in _by_hypothesis(plan, verdicts) if h.primary == primary]
    if plan.compare == "best":
        for criterion in dict.fromkeys(h.criterion for h, _ in rows):
            if criterion_decided(plan, verdicts, criterion=criterion):
                continue
            beaten = losers(plan, verdicts, criterion=criterion)
            for h, status in rows:
                if h.criterion != criterion or status != "undecided":
                    continue
                if h.arm not in beaten or h.opponent not in beaten:
                    pairs.add(frozenset((h.arm, h.opponent)))
        return pairs
    return {frozenset((h.arm, h.opponent)) for h, s in rows if s == "undecided"}


def wanted_pairs(plan: Plan, verdicts: Sequence[Verdict]) -> frozenset[ArmPair] | None:
    """The arm pairs new trials should go to first, or None (allocate uniformly)."""
    for primary in (True, False):
        pairs = _open_pairs(plan, verdicts, primary=primary)
        if pairs:
            return frozenset(pairs)
    return None


__all__ = [
    "ArmPair",
    "arms_of",
    "best_arm",
    "criterion_decided",
    "decided",
    "losers",
    "wanted_pairs",
]
