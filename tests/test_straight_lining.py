"""Straight-lining (always left, always tie): the per-evaluator tests against scipy's exact
binomial test, their error rates by simulation with a known truth, and the flag on real
evaluators in the dashboard's tally and the verdicts' units (SQLite and PostgreSQL)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import stats

from app.analysis.quality import (
    STRAIGHT_LINE_ALPHA,
    STRAIGHT_LINE_MIN_TRIALS,
    TIE_CEILING,
    straight_lining,
)
from app.dashboard.tally import Tally, Units, finished_evaluators, straight_liners
from app.rating import service
from tests.kit.rating import evaluator, store_answer
from tests.kit.studies import rating_study


@pytest.mark.parametrize(
    ("left", "right", "ties"),
    [(12, 0, 0), (0, 12, 0), (7, 5, 0), (3, 9, 8), (0, 0, 12), (30, 2, 1), (1, 1, 19), (0, 0, 0)],
)
def test_p_values_are_scipys_exact_binomial_tests(left, right, ties):
    test = straight_lining(left, right, ties)
    decisive, n = left + right, left + right + ties
    if decisive:
        assert test.side_p == pytest.approx(stats.binomtest(left, decisive, 0.5).pvalue, rel=1e-9)
    else:
        assert test.side_p is None
    if n:
        reference = stats.binomtest(ties, n, TIE_CEILING, alternative="greater").pvalue
        assert test.tie_p == pytest.approx(reference, rel=1e-9)
    else:
        assert test.tie_p is None


def test_always_left_and_always_tie_are_flagged_from_the_minimum_trials():
    before = STRAIGHT_LINE_MIN_TRIALS - 1
    assert not straight_lining(before, 0, 0).flagged  # too few trials to say
    left = straight_lining(STRAIGHT_LINE_MIN_TRIALS, 0, 0)
    assert left.flagged and left.reason is not None and "left" in left.reason
    right = straight_lining(0, STRAIGHT_LINE_MIN_TRIALS, 0)
    assert right.flagged and right.reason is not None and "right" in right.reason
    tie = straight_lining(0, 0, STRAIGHT_LINE_MIN_TRIALS)
    assert tie.flagged and tie.reason is not None and "tie" in tie.reason
    assert not straight_lining(6, 6, 0).flagged
    with pytest.raises(ValueError):
        straight_lining(-1, 0, 0)


def test_error_rates_by_simulation():
    """Honest evaluators (any side preference cancelled by counterbalancing, ties at or below
    the ceiling) are flagged at most about alpha; always-left and always-tie ones always,
    and a side-biased one (80% left) often once they answered enough."""
    rng = np.random.default_rng(16)
    runs, trials = 4000, 20

    def flagged_share(p_left: float, p_tie: float) -> float:
        counts = rng.multinomial(trials, [p_left, 1 - p_left - p_tie, p_tie], size=runs)
        return float(np.mean([straight_lining(*map(int, c)).flagged for c in counts]))

    assert flagged_share(0.5, 0.0) <= 2 * STRAIGHT_LINE_ALPHA  # decisive, no side habit
    assert flagged_share(0.25, 0.5) <= 2 * STRAIGHT_LINE_ALPHA  # ties at the ceiling
    assert flagged_share(0.35, 0.3) <= 2 * STRAIGHT_LINE_ALPHA
    assert flagged_share(1.0, 0.0) == 1.0
    assert flagged_share(0.0, 1.0) == 1.0
    assert flagged_share(0.95, 0.0) > 0.5


def _rate(session, study, ev, choose) -> None:  # type: ignore[no-untyped-def]
    """The evaluator answers every pair it is given, `choose()` on every criterion."""
    while True:
        result = service.current_trial(session=session, study=study, evaluator=ev)
        session.commit()
        if result.status != "trial":
            return
        votes = dict.fromkeys(study.criterion_keys, choose())
        store_answer(session, study, ev, trial_id=result.trial.id, votes=votes)
        session.commit()


def test_an_always_left_evaluator_is_flagged_a_random_one_is_not(admin, session, settings):
    study = rating_study(session, settings, prompts=12, trials_per_evaluator=12)
    tally = Tally.build(session=session, study=study)  # before any vote: kept current below
    lazy, honest = evaluator(session, settings, study), evaluator(session, settings, study)
    rng = random.Random(7)
    _rate(session, study, lazy, lambda: "left")
    _rate(session, study, honest, lambda: rng.choice(["left", "right", "tie"]))

    tests = straight_liners(session, study=study)
    assert tests[lazy.id].flagged and tests[lazy.id].left == 12
    assert not tests[honest.id].flagged and tests[honest.id].trials == 12
    # The dashboard's "exclude flagged evaluators": kept current vote by vote, and built cold.
    tally.advance(session=session)
    assert tally.flagged_evaluators == {lazy.id}
    assert Tally.build(session=session, study=study).flagged_evaluators == {lazy.id}
    # The verdicts skip the same evaluators.
    units = Units(arms=tuple(a.name for a in study.arms), criteria=tuple(study.criterion_keys))
    units.add(session, study, finished_evaluators(session, study))
    assert units.counted == [honest.id]
    # The admin's evaluators page says which one and why.
    page = admin.get(f"/admin/studies/{study.slug}/evaluators").text
    rows = {
        e.id: page.split(f'data-evaluator="{e.id}"')[1].split("</tr>")[0] for e in (lazy, honest)
    }
    assert "flagged: straight-lining: 12 of 12 decisive answers left" in rows[lazy.id]
    assert "flagged" not in rows[honest.id].split('class="straight-lining"')[1]
