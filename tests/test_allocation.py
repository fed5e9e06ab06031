"""Adaptive allocation: what the plan still needs (pure, `app.analysis.allocation`), the design
weights of pooled preferences (checked by simulation with a known truth), and the rating service
sending new trials to the wanted arm pairs first while coverage stays balanced (SQLite and
PostgreSQL)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from app.analysis import allocation
from app.analysis.counts import VoteTable
from app.analysis.pairwise import arm_preference
from app.analysis.plan import Hypothesis, Plan
from app.analysis.schemas import Verdict, VoteRecord
from app.dashboard.service import DashboardCache
from app.dashboard.stopping import check_studies
from app.db import session_factory
from app.rating.models import Matchup, Trial
from app.studies import service as studies_service
from app.studies.studyfile import AnalysisSpec, StudyFileError, parse_study
from tests.kit.admin import log_in
from tests.kit.rating import assert_counters_match_trials, evaluator, run_session
from tests.kit.studies import ARMS, rating_study, study_toml

ARMS4 = ("a", "b", "c", "d")


def plan_of(compare: str, arms=ARMS4, criteria=("overall",), secondary=()) -> Plan:  # type: ignore[no-untyped-def]
    if compare == "best":
        pairs = [(x, y) for i, x in enumerate(arms) for y in arms[i + 1 :]]
    else:
        pairs = [(arms[0], y) for y in arms[1:]]
    hypotheses = tuple(
        Hypothesis(c, x, y, "superiority", 0.0, c not in secondary)
        for c in criteria
        for x, y in pairs
    )
    return Plan(0.05, hypotheses, "when_decided", None, True, compare)  # type: ignore[arg-type]


def verdicts(plan: Plan, **status: str) -> list[Verdict]:
    """Verdicts of `plan`, `status["a_b"]` (criterion left out: every criterion) or
    `status["overall_a_b"]` for the pair's status; the rest undecided."""
    out = []
    for h in plan.hypotheses:
        s = status.get(f"{h.criterion}_{h.arm}_{h.opponent}", status.get(f"{h.arm}_{h.opponent}"))
        out.append(
            Verdict(h.criterion, h.arm, h.opponent, h.hypothesis, 0.0, s or "undecided", 0, 1, 0, 0)
        )
    return out


def pairs(*names: str) -> frozenset[frozenset[str]]:
    return frozenset(frozenset(n.split("_")) for n in names)


# --- what the plan still needs ---------------------------------------------------------------


def test_focus_plans_want_the_pairs_of_undecided_primary_hypotheses_only():
    plan = plan_of("focus", criteria=("overall", "motion"), secondary=("motion",))
    assert allocation.wanted_pairs(plan, verdicts(plan)) == pairs("a_b", "a_c", "a_d")
    some = verdicts(plan, overall_a_b="superior", overall_a_c="inferior")
    assert allocation.wanted_pairs(plan, some) == pairs("a_d")
    assert not allocation.decided(plan, some)
    primary_done = verdicts(
        plan, overall_a_b="superior", overall_a_c="inferior", overall_a_d="superior"
    )
    assert allocation.decided(plan, primary_done)
    # Nothing primary open: the secondary criterion's undecided pairs, then uniform.
    assert allocation.wanted_pairs(plan, primary_done) == pairs("a_b", "a_c", "a_d")
    everything = verdicts(plan, a_b="superior", a_c="inferior", a_d="superior")
    assert allocation.wanted_pairs(plan, everything) is None


def test_best_arm_plans_drop_pairs_of_two_arms_that_have_both_lost():
    plan = plan_of("best")
    assert allocation.wanted_pairs(plan, verdicts(plan)) == pairs(
        "a_b", "a_c", "a_d", "b_c", "b_d", "c_d"
    )
    # a beat b and c; c beat d: only a against d can still matter (b, c, d have all lost).
    mid = verdicts(plan, a_b="superior", a_c="superior", c_d="superior")
    assert allocation.losers(plan, mid, criterion="overall") == {"b", "c", "d"}
    assert allocation.wanted_pairs(plan, mid) == pairs("a_d")
    assert allocation.best_arm(plan, mid, criterion="overall") is None
    assert not allocation.decided(plan, mid)
    done = verdicts(plan, a_b="superior", a_c="superior", c_d="superior", a_d="superior")
    assert allocation.best_arm(plan, done, criterion="overall") == "a"
    assert allocation.decided(plan, done)
    # An arm that beat all but lost once is not the best; "inferior" reads from the arm's side.
    upset = verdicts(plan, a_b="superior", a_c="superior", a_d="inferior", b_d="inferior")
    assert allocation.best_arm(plan, upset, criterion="overall") is None
    # d beat a and b; only d against c is left (b against c: both have lost).
    assert allocation.wanted_pairs(plan, upset) == pairs("c_d")


def test_secondary_criteria_of_a_best_arm_plan_follow_the_same_rule():
    plan = plan_of(
        "best", arms=("a", "b", "c"), criteria=("overall", "motion"), secondary=("motion",)
    )
    best_everywhere = verdicts(plan, a_b="superior", a_c="superior")
    assert allocation.decided(plan, best_everywhere)
    # b against c is undecided on both criteria, but neither can be best: nothing is open.
    assert allocation.wanted_pairs(plan, best_everywhere) is None
    secondary_open = verdicts(plan, a_b="superior", a_c="superior", motion_a_c="undecided")
    assert allocation.wanted_pairs(plan, secondary_open) == pairs("a_c", "b_c")


def test_a_cycle_of_preferences_is_decided_with_no_best_arm():
    plan = plan_of("best", arms=("a", "b", "c"))
    cycle = verdicts(plan, a_b="superior", b_c="superior", a_c="inferior")
    assert allocation.best_arm(plan, cycle, criterion="overall") is None
    assert allocation.decided(plan, cycle)


# --- design weights --------------------------------------------------------------------------


def table(rng: np.random.Generator, rates: dict[tuple[str, str], float], n: dict) -> VoteTable:  # type: ignore[type-arg]
    records = []
    for (x, y), p in rates.items():
        wins = rng.random(n[(x, y)]) < p
        for i, won in enumerate(wins):
            records.append(
                VoteRecord(
                    prompt_id=i % 8,
                    theme=None,
                    evaluator=f"e{len(records)}",
                    criterion="overall",
                    left_arm=x,
                    right_arm=y,
                    choice="left" if won else "right",
                )
            )
    return VoteTable.from_records(records, arms=("a", "b", "c"), criteria=("overall",))


def test_pair_weighted_preference_is_unbiased_under_unequal_allocation_and_covers():
    """Arm a wins 80% against b and 40% against c: the equal-weight (uniform design) win rate is
    60%. Allocation gives a-b four times the votes of a-c: pooling by votes says 72%, the design
    weights recover 60% and their 95% interval covers it about 95% of the time."""
    rng = np.random.default_rng(7)
    rates = {("a", "b"): 0.8, ("a", "c"): 0.4, ("b", "c"): 0.5}
    n = {("a", "b"): 200, ("a", "c"): 50, ("b", "c"): 50}
    truth = 0.6
    pooled, weighted, covered = [], [], 0
    runs = 600
    for _ in range(runs):
        counts = table(rng, rates, n).counts()
        by_votes = {r.arm: r for r in arm_preference(counts)}["a"]
        by_pairs = {r.arm: r for r in arm_preference(counts, pair_weighted=True)}["a"]
        pooled.append(by_votes.win_rate)
        weighted.append(by_pairs.win_rate)
        covered += by_pairs.ci_low <= truth <= by_pairs.ci_high
        assert (by_pairs.wins, by_pairs.losses) == (by_votes.wins, by_votes.losses)
    assert np.mean(pooled) == pytest.approx(0.72, abs=0.01)  # biased by the allocation
    assert np.mean(weighted) == pytest.approx(truth, abs=0.01)
    assert 0.92 <= covered / runs <= 0.975


def test_with_equal_shares_the_weights_change_nothing():
    rng = np.random.default_rng(1)
    rates = {("a", "b"): 0.7, ("a", "c"): 0.4, ("b", "c"): 0.5}
    counts = table(rng, rates, dict.fromkeys(rates, 100)).counts()
    for plain, weighted in zip(
        arm_preference(counts), arm_preference(counts, pair_weighted=True), strict=True
    ):
        ab, ac = counts.outcomes().sum(axis=1)[0][:2]
        assert weighted.win_rate == pytest.approx(plain.win_rate, abs=0.03), (ab, ac)


# --- the study file --------------------------------------------------------------------------


def test_compare_best_tests_every_pair_in_the_study_order():
    spec = AnalysisSpec(compare="best", adaptive=True, stop="when_decided")
    plan = spec.plan(criteria=["overall"], arms=["x", "y", "z"], focus="x")
    assert [(h.arm, h.opponent) for h in plan.hypotheses] == [("x", "y"), ("x", "z"), ("y", "z")]
    assert plan.compare == "best"


def test_compare_best_refuses_a_focus_arm_and_non_inferiority_with_line_and_column():
    toml = study_toml(slug="best", arms=3, rating={}) + (
        f'\n[analysis]\ncompare = "best"\nfocus = "{ARMS[0]["name"]}"\n'
        'hypothesis = "non_inferiority"\nmargin = 0.05\n'
    )
    with pytest.raises(StudyFileError) as caught:
        parse_study(
            toml_text=toml,
            toml_name="study.toml",
            prompts_bytes=b"prompt,theme,seed\nA cat,t,1\n",
            prompts_name="prompts.csv",
        )
    text = str(caught.value)
    assert 'a focus arm applies only to compare = "focus"' in text
    assert 'analysis.hypothesis: compare = "best" needs superiority tests' in text
    assert "study.toml:38:9: analysis.focus" in text


# --- the rating service ----------------------------------------------------------------------


def check(engine):  # type: ignore[no-untyped-def]
    return check_studies(
        read=session_factory(engine, read_only=True),
        write=session_factory(engine),
        cache=DashboardCache(),
    )


def arm_pair(session, study, trial: Trial) -> frozenset[str]:  # type: ignore[no-untyped-def]
    return frozenset(arm_pair_names(study, session.get(Matchup, trial.matchup_id)))


def test_the_check_sends_new_trials_to_the_wanted_pairs_first_with_coverage_balanced(
    engine, session, settings
):
    """Three arms, the plan the focus arm against the others: the pair of the two others answers
    nothing the plan asks, so no trial goes to it while focus pairs are left."""
    study = rating_study(
        session, settings, prompts=4, arms=3, trials_per_evaluator=8, open_enrollment=True
    )
    focus = study.arms[0].name
    spec = AnalysisSpec(focus=focus, adaptive=True, stop="when_decided")
    studies_service.set_analysis(session=session, study=study, spec=spec)
    session.commit()
    assert study.allocation is None
    check(engine)
    session.refresh(study)
    others = sorted(a.name for a in study.arms[1:])
    assert study.allocation["pairs"] == [sorted([focus, o]) for o in others]

    seen: Counter[frozenset[str]] = Counter()
    for _ in range(3):
        for trial in run_session(session, study, evaluator(session, settings, study)):
            seen[arm_pair(session, study, trial)] += 1
    assert set(seen) == {frozenset((focus, o)) for o in others}  # 8 focus matchups, 8 trials
    coverage = Counter(
        m.live_trials
        for m in session.query(Matchup).filter_by(study_id=study.id)
        if focus in arm_pair_names(study, m)
    )
    assert coverage == {3: 8}  # every focus matchup judged by each of the three evaluators
    assert_counters_match_trials(session)


def arm_pair_names(study, m: Matchup) -> set[str]:  # type: ignore[no-untyped-def]
    names = {arm.id: arm.name for arm in study.arms}
    return {names[m.arm_a_id], names[m.arm_b_id]}


def test_an_evaluator_with_every_wanted_matchup_judged_gets_the_others(engine, session, settings):
    study = rating_study(
        session, settings, prompts=4, arms=3, trials_per_evaluator=10, open_enrollment=True
    )
    focus = study.arms[0].name
    studies_service.set_analysis(
        session=session, study=study, spec=AnalysisSpec(focus=focus, adaptive=True)
    )
    session.commit()
    check(engine)
    session.refresh(study)
    assert study.allocation is not None
    trials = run_session(session, study, evaluator(session, settings, study))
    pairs_in_order = [focus in arm_pair(session, study, t) for t in trials]
    assert pairs_in_order == [True] * 8 + [False] * 2  # wanted first, then the rest


def test_without_adaptive_the_check_leaves_allocation_uniform(engine, session, settings):
    study = rating_study(session, settings, prompts=4, arms=3, open_enrollment=True)
    studies_service.set_analysis(
        session=session, study=study, spec=AnalysisSpec(stop="when_decided")
    )
    session.commit()
    check(engine)
    session.refresh(study)
    assert study.allocation is None
    trials = run_session(session, study, evaluator(session, settings, study))
    assert len({arm_pair(session, study, t) for t in trials}) == 3  # every pair of arms, uniformly


def test_the_dashboard_and_study_page_say_where_new_pairs_go(engine, session, settings, client):
    study = rating_study(session, settings, prompts=4, arms=3, open_enrollment=True)
    studies_service.set_analysis(
        session=session,
        study=study,
        spec=AnalysisSpec(compare="best", adaptive=True, stop="when_decided"),
    )
    session.commit()
    log_in(client)
    dashboard = client.get(f"/admin/studies/{study.slug}/dashboard")
    assert dashboard.status_code == 200
    names = [arm.name for arm in study.arms]
    assert "Adaptive allocation: new pairs go first to" in dashboard.text
    assert f'{names[1]} <span class="vs">vs</span> {names[2]}' in dashboard.text
    assert "Best arm:" in dashboard.text and "not identified yet" in dashboard.text
    page = client.get(f"/admin/studies/{study.slug}").text
    assert "which arm is best" in page and "when the best arm is identified" in page
    assert "not acted on" not in page


def test_summary_json_says_what_the_allocation_and_the_best_arm_are(session, settings, client):
    study = rating_study(session, settings, prompts=4, arms=3, open_enrollment=True)
    studies_service.set_analysis(
        session=session, study=study, spec=AnalysisSpec(compare="best", adaptive=True)
    )
    session.commit()
    log_in(client)
    basis = client.get(f"/admin/studies/{study.slug}/export/summary.json").json()["verdict_basis"]
    names = [arm.name for arm in study.arms]
    assert basis["compare"] == "best" and basis["adaptive"] is True
    assert basis["wanted_pairs"] == [[a, b] for i, a in enumerate(names) for b in names[i + 1 :]]
    assert basis["best"] == dict.fromkeys(study.criterion_keys)
