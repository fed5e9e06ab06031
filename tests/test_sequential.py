"""Anytime-valid verdicts (app/analysis/sequential.py): the confidence sequences against the
reference implementation (confseq), the verdict rules, the units, and simulated studies with a
known truth read after every vote (benchmarks/stopping.py has the large runs and the figures)."""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from app.analysis import VoteTable
from app.analysis.plan import Hypothesis, Plan
from app.analysis.sequential import (
    HedgedSequence,
    Monitor,
    UnitCounts,
    confidence_sequence,
    default_plan,
    hypothesis_alpha,
    status_of,
    verdicts,
)
from benchmarks.stopping import (
    SCENARIOS,
    clopper_pearson,
    decided,
    type_one,
)

REFERENCE = Path(__file__).with_name("confseq_reference.json")
VERDICT_KEYS = [
    "criterion", "arm", "opponent", "hypothesis", "margin", "status", "lower", "upper", "votes",
    "alpha",
]  # fmt: skip


# --- the reference: confseq 0.0.11 -----------------------------------------------------------


def reference_sequences() -> list[dict]:  # type: ignore[type-arg]
    """The sequences the reference bounds were computed on (seeded, so they never change)."""
    rng = np.random.default_rng(20261206)
    out = []
    for p, n, alpha in ((0.62, 400, 0.05), (0.5, 300, 0.05 / 6), (0.35, 120, 0.01)):
        x = rng.binomial(1, p, n)
        out.append({"wins": x.tolist(), "losses": (1 - x).tolist(), "ties": [0] * n,
                    "alpha": alpha})  # fmt: skip
    size = rng.integers(1, 12, 250)
    wins = rng.binomial(size, 0.45)
    ties = rng.binomial(size - wins, 0.3)
    out.append({"wins": wins.tolist(), "losses": (size - wins - ties).tolist(),
                "ties": ties.tolist(), "alpha": 0.05 / 3})  # fmt: skip
    return out


def confseq_bounds(seq: dict) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    """confseq's bounds for one sequence: `hedged_cs` on Bernoulli outcomes; with ties and
    several votes per unit, the same hedged capital process through confseq's own grid
    machinery (`cs_from_martingale` over `diversified_betting_mart` with `lambda_predmix_eb`)
    on x(c) = (wins + c ties) / votes, the statistic the module bets on."""
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # type: ignore[attr-defined]  # confseq 0.0.11 predates NumPy 2
    betting = pytest.importorskip("confseq.betting")
    strategies = pytest.importorskip("confseq.betting_strategies")
    wins, losses, ties = (np.array(seq[k], dtype=float) for k in ("wins", "losses", "ties"))
    alpha = seq["alpha"]
    if not ties.any() and np.all(wins + losses == 1):
        return betting.hedged_cs(wins, alpha=alpha)
    n = wins + losses + ties

    def bets(x, m):  # type: ignore[no-untyped-def]
        return strategies.lambda_predmix_eb(x, alpha=alpha / 2)

    def mart(_x, m):  # type: ignore[no-untyped-def]
        return betting.diversified_betting_mart(
            (wins + m * ties) / n, m, alpha=alpha, lambdas_fns_positive=[bets],
            lambdas_fns_negative=[bets], theta=0.5, convex_comb=False, trunc_scale=0.5,
            m_trunc=True,
        )  # fmt: skip

    return betting.cs_from_martingale(
        np.zeros(len(n)), mart, breaks=1000, alpha=alpha, running_intersection=True
    )


def ours(seq: dict) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    return confidence_sequence(seq["wins"], seq["losses"], seq["ties"], alpha=seq["alpha"])


def thousandths(values: np.ndarray) -> list[int]:
    return [round(v * 1000) for v in values]


def test_the_sequences_match_the_reference_bounds_stored_from_confseq():
    """Always runs: the bounds confseq 0.0.11 gave on these sequences (stored by
    `.venv/bin/python -m tests.test_sequential`), after every unit, running intersection."""
    stored = json.loads(REFERENCE.read_text())
    sequences = reference_sequences()
    assert len(stored) == len(sequences)
    for seq, ref in zip(sequences, stored, strict=True):
        lower, upper = ours(seq)
        assert thousandths(lower) == ref["lower"]
        assert thousandths(upper) == ref["upper"]
    # the sequences are not trivial: they narrow, and the clear one excludes 1/2
    assert stored[0]["lower"][-1] > 500 and stored[0]["upper"][-1] - stored[0]["lower"][-1] < 200


def test_the_sequences_equal_confseq_bound_for_bound():
    """With confseq installed (an optional extra that needs building; see pyproject.toml): the
    same bounds, exactly, after every unit, on the stored sequences and on fresh ones."""
    rng = np.random.default_rng(7)
    sequences = reference_sequences()
    for n in (1, 2, 37, 600):
        x = rng.binomial(1, rng.uniform(0.2, 0.8), n)
        sequences.append({"wins": x, "losses": 1 - x, "ties": np.zeros(n), "alpha": 0.05})
    for seq in sequences:
        lower, upper = ours(seq)
        ref_lower, ref_upper = confseq_bounds(seq)
        np.testing.assert_array_equal(lower, ref_lower)
        np.testing.assert_array_equal(upper, ref_upper)


def test_the_window_changes_no_bound():
    """The dashboard computes only grid values near the running intersection: the same final
    bounds as the full grid on many random unit sequences (and far less work)."""
    rng = np.random.default_rng(3)
    for _ in range(25):
        n = int(rng.integers(1, 600))
        size = rng.integers(1, 25, n)
        wins = rng.binomial(size, rng.uniform(0.1, 0.9))
        ties = rng.binomial(size - wins, rng.uniform(0, 0.5))
        full = HedgedSequence(alpha=0.01, window=False)
        narrow = HedgedSequence(alpha=0.01)
        for seq in (full, narrow):
            seq.extend(wins, size - wins - ties, ties)
        assert narrow.bounds() == full.bounds()
        assert narrow.votes == full.votes == int(size.sum())
    assert narrow.grid.shape[0] < full.grid.shape[0]


def test_extending_unit_by_unit_gives_the_bounds_of_one_batch():
    rng = np.random.default_rng(5)
    size = rng.integers(1, 9, 700)
    wins = rng.binomial(size, 0.6)
    ties = rng.binomial(size - wins, 0.2)
    batch = HedgedSequence(alpha=0.05)
    batch.extend(wins, size - wins - ties, ties)
    stepwise = HedgedSequence(alpha=0.05)
    for i in range(0, 700, 13):
        stepwise.extend(wins[i : i + 13], (size - wins - ties)[i : i + 13], ties[i : i + 13])
    assert stepwise.bounds() == batch.bounds()
    assert batch.bounds()[0] > 0.5


# --- verdicts ---------------------------------------------------------------------------------


SUP = Hypothesis("overall", "fast", "slow", "superiority", 0.0, True)
NI = Hypothesis("overall", "fast", "slow", "non_inferiority", 0.05, True)


@pytest.mark.parametrize(
    ("hypothesis", "lower", "upper", "status"),
    [
        (SUP, 0.501, 0.7, "superior"),
        (SUP, 0.5, 0.7, "undecided"),
        (SUP, 0.3, 0.499, "inferior"),
        (SUP, 0.3, 0.5, "undecided"),
        (NI, 0.451, 0.6, "non_inferior"),
        (NI, 0.45, 0.6, "undecided"),
        (NI, 0.2, 0.449, "inferior"),
        (NI, 0.52, 0.7, "non_inferior"),
    ],
)
def test_the_verdict_rules(hypothesis, lower, upper, status):
    assert status_of(hypothesis, lower, upper) == status


def table(rows, *, arms=("fast", "slow"), criteria=("overall",)) -> VoteTable:  # type: ignore[no-untyped-def]
    """rows: (evaluator, prompt, winner or 'tie', is_repeat); fast is always on the left."""
    return VoteTable.from_columns(
        prompt_id=[r[1] for r in rows], theme=[None] * len(rows),
        evaluator=[r[0] for r in rows], criterion=["overall"] * len(rows),
        left_arm=["fast"] * len(rows), right_arm=["slow"] * len(rows),
        choice=[{"fast": "left", "slow": "right", "tie": "tie"}[r[2]] for r in rows],
        is_repeat=[r[3] for r in rows], arms=arms, criteria=criteria,
    )  # fmt: skip


def test_units_are_evaluators_in_the_order_they_finished_without_repeats_or_excluded():
    rows = [
        (1, "p1", "fast", False), (1, "p2", "tie", False), (1, "p1", "slow", True),
        (2, "p1", "slow", False), (3, "p2", "fast", False), (3, "p1", "fast", False),
    ]  # fmt: skip
    units = UnitCounts.from_table(table(rows), order=[3, 1, 2], exclude_evaluators={2})
    assert units.evaluators == (3, 1)
    wins, losses, ties = units.outcomes(SUP)
    assert wins.tolist() == [2, 1] and losses.tolist() == [0, 0] and ties.tolist() == [0, 1]
    # the opponent's view is the mirror image
    other = Hypothesis("overall", "slow", "fast", "superiority", 0.0, True)
    assert units.outcomes(other)[0].tolist() == [0, 0]
    # evaluators who have not finished wait
    assert UnitCounts.from_table(table(rows), order=[1]).evaluators == (1,)


def test_verdicts_have_the_plan_order_the_split_alpha_and_count_ties_in_votes():
    rng = np.random.default_rng(1)
    rows = [
        (e, f"p{k}", "fast" if rng.random() < 0.85 else ("tie" if rng.random() < 0.5 else "slow"),
         False)
        for e in range(60) for k in range(8)
    ]  # fmt: skip
    plan = Plan(0.05, (SUP, NI), "never", None, False)
    found = verdicts(table(rows), plan)
    assert [v.hypothesis for v in found] == ["superiority", "non_inferiority"]
    assert [list(v.to_dict()) for v in found] == [VERDICT_KEYS, VERDICT_KEYS]
    assert all(v.alpha == 0.025 == hypothesis_alpha(plan) for v in found)
    assert all(v.votes == 480 for v in found)
    assert found[0].status == "superior" and found[1].status == "non_inferior"
    assert 0.5 < found[0].lower < 0.85 < found[0].upper <= 1
    # nobody finished: nothing counted, nothing decided
    none = verdicts(table(rows), plan, order=[])
    assert [(v.status, v.votes, v.lower, v.upper) for v in none] == [("undecided", 0, 0, 1)] * 2


def test_a_verdict_once_given_stays():
    """Read after every unit: the bounds only narrow, so no verdict ever reverses."""
    rng = np.random.default_rng(2)
    plan = default_plan(criteria=["overall"], arms=["fast", "slow"], focus="fast")
    monitor = Monitor(plan)
    seen = []
    for e in range(150):
        wins = rng.binomial(6, 0.7)
        cube = np.array([[[[wins, 6 - wins, 0]]]])
        monitor.extend(UnitCounts(("fast", "slow"), ("overall",), (e,), cube))
        v = monitor.verdicts()[0]
        seen.append((v.status, v.lower, v.upper))
    statuses = [s for s, _, _ in seen]
    assert "superior" in statuses
    first = statuses.index("superior")
    assert set(statuses[first:]) == {"superior"}
    assert all(a[1] <= b[1] and a[2] >= b[2] for a, b in pairwise(seen))


def test_the_default_plan():
    plan = default_plan(criteria=["a", "b"], arms=["x", "y", "z"], focus="y")
    assert [(h.criterion, h.arm, h.opponent) for h in plan.hypotheses] == [
        ("a", "y", "x"), ("a", "y", "z"), ("b", "y", "x"), ("b", "y", "z"),
    ]  # fmt: skip
    assert all(h.hypothesis == "superiority" and h.primary for h in plan.hypotheses)
    assert (plan.alpha, plan.stop, plan.budget, plan.adaptive) == (0.05, "never", None, False)
    with pytest.raises(ValueError, match="unknown focus arm"):
        default_plan(criteria=["a"], arms=["x"], focus="q")


# --- simulated studies with a known truth -------------------------------------------------------


def test_with_no_true_preference_verdicts_stay_rare_while_peeking_declares_often():
    """Null (decisive win rate exactly 1/2 on every criterion, with prompt and evaluator
    heterogeneity, ties and careless raters), verdicts read after every vote: declared in at
    most alpha of the studies; the fixed-sample sign test read after every trial declares far
    more often. 150 studies here; the slow test and benchmarks/stopping.py run thousands."""
    counts = type_one(SCENARIOS[0], 150, seed=11, by_votes=False)
    k, n = counts["verdicts"]
    assert k / n <= 0.05
    peek, _ = counts["fixed-sample test, read after every trial"]
    assert clopper_pearson(peek, n)[0] > 0.05  # peeking: significantly above alpha
    assert peek > 5 * max(k, 1)


def test_a_clear_preference_is_decided():
    clear = replace(SCENARIOS[0], effect=(1.0, 0.0, 0.0))
    rng = np.random.default_rng(4)
    from benchmarks.stopping import simulate

    statuses = [decided(clear, simulate(clear, rng), criterion="c0") for _ in range(10)]
    assert statuses.count("superior") >= 9


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scenario", "studies"),
    [(SCENARIOS[0], 1000), (SCENARIOS[1], 1000), (SCENARIOS[2], 1000)],
    ids=["superiority", "non-inferiority", "three-arms"],
)
def test_type_one_error_over_many_studies(scenario, studies):
    """1,000 null studies per scenario (superiority; non-inferiority at the margin; three
    arms), monitored after every vote: the verdicts' error rate with its 95% interval lies
    below alpha; peeking at the fixed-sample test lies above it. About half a minute;
    benchmarks/stopping.py runs 2,000 of each."""
    counts = type_one(scenario, studies, seed=2026, by_votes=False)
    k, n = counts["verdicts"]
    assert n == studies and clopper_pearson(k, n)[1] <= scenario.alpha, counts
    peek, _ = counts["fixed-sample test, read after every trial"]
    assert clopper_pearson(peek, n)[0] > scenario.alpha, counts


if __name__ == "__main__":  # store the reference bounds (needs confseq: see pyproject.toml)
    stored = []
    for seq in reference_sequences():
        lower, upper = confseq_bounds(seq)
        stored.append({"alpha": seq["alpha"], "lower": thousandths(lower),
                       "upper": thousandths(upper)})  # fmt: skip
    REFERENCE.write_text(json.dumps(stored, separators=(",", ":")) + "\n")
    print(f"wrote {REFERENCE}")
