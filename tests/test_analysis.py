"""Statistics in app.analysis: each checked against a reference implementation, plus simulations
with known preference rates (intervals cover the truth, p-values behave, bias is detected)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random

import choix
import krippendorff
import numpy as np
import pytest
from scipy import optimize, stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_confint, proportion_effectsize

from app.analysis import (
    NO_THEME,
    PEEKING_WARNING,
    ClipTelemetry,
    VoteCounts,
    VoteRecord,
    VoteTable,
    agreement,
    alpha_spending,
    binomial_test,
    bootstrap_summary,
    bradley_terry,
    clopper_pearson_lower,
    evaluator_quality,
    exact_power,
    fit_davidson,
    holm,
    krippendorff_alpha,
    non_inferiority,
    pairwise_summary,
    required_decisive_votes,
    sequential_note,
    speed_summary,
    speed_vs_preference,
    summarize,
    wilson_interval,
)

ARMS = ("animatediff", "lightning")
CRITERIA = (
    "video_text_relevance",
    "appearance_distortion",
    "appearance_aesthetics",
    "motion_naturalness",
    "motion_amplitude",
    "overall_quality",
)
THEMES = ("animals", "people", "landscape", "vehicles", "abstract")


def simulate(
    *,
    seed: int,
    arms: tuple[str, ...] = ARMS,
    criteria: tuple[str, ...] = CRITERIA,
    rates: dict[str, float] | None = None,
    strengths: dict[str, float] | None = None,
    tie_rate: float = 0.3,
    left_bias: float = 0.0,
    n_prompts: int = 60,
    n_evaluators: int = 25,
    trials_per_evaluator: int = 30,
    repeat_share: float = 0.0,
    repeat_noise: float = 0.0,
) -> list[VoteRecord]:
    """Votes from a known model. Two arms: P(second arm wins | decisive) = rates[criterion]
    (default 0.5). More arms: Bradley-Terry with log-strengths `strengths`, same on every
    criterion. Ties with probability `tie_rate`. With probability `left_bias` a decisive vote
    goes to the left clip whatever it shows (position bias). Repeats re-show a matchup to the same
    evaluator; with probability `repeat_noise` each repeat answer is redrawn."""
    rng = random.Random(seed)
    rates = rates or {}
    pairs = list(itertools.combinations(arms, 2))
    records: list[VoteRecord] = []
    trial = 0
    for ev in range(n_evaluators):
        shown = []
        for _ in range(trials_per_evaluator):
            prompt = rng.randrange(n_prompts)
            a, b = pairs[rng.randrange(len(pairs))]
            shown.append((prompt, a, b))
        extra = [s for s in shown if rng.random() < repeat_share]
        answers: dict[tuple, str] = {}
        for is_repeat, (prompt, a, b) in [(False, s) for s in shown] + [(True, s) for s in extra]:
            trial += 1
            a_left = rng.random() < 0.5
            left, right = (a, b) if a_left else (b, a)
            flagged = rng.random() < 0.05
            for crit in criteria:
                key = (ev, prompt, a, b, crit)
                if is_repeat and key in answers and rng.random() >= repeat_noise:
                    winner = answers[key]
                else:
                    if strengths is not None:
                        p_b = 1 / (1 + math.exp(strengths[a] - strengths[b]))
                    else:
                        p_b = rates.get(crit, 0.5)
                    if rng.random() < tie_rate:
                        winner = "tie"
                    elif rng.random() < left_bias:
                        winner = left
                    else:
                        winner = b if rng.random() < p_b else a
                    answers.setdefault(key, winner)
                choice = "tie" if winner == "tie" else ("left" if winner == left else "right")
                records.append(
                    VoteRecord(
                        prompt_id=prompt,
                        theme=THEMES[prompt % len(THEMES)],
                        evaluator=f"ev{ev}",
                        criterion=crit,
                        left_arm=left,
                        right_arm=right,
                        choice=choice,
                        flagged=flagged,
                        trial_id=trial,
                        is_repeat=is_repeat,
                        matchup_id=(prompt, a, b),
                    )
                )
    return records


@pytest.fixture
def no_gc_in_multipletests(monkeypatch):
    """statsmodels' Holm branch calls gc.collect() on every call (0.1 s in a full process)."""
    import gc

    monkeypatch.setattr(gc, "collect", lambda *a: 0)


def table_of(records, arms=ARMS, criteria=CRITERIA) -> VoteTable:
    return VoteTable.from_records(records, arms=arms, criteria=criteria)


# ------------------------------------------------------------------- elementary statistics
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_matches_statsmodels(confidence):
    for n in [1, 2, 7, 30, 101, 1000]:
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            lo, hi = wilson_interval(k, n, confidence)
            ref = proportion_confint(k, n, alpha=1 - confidence, method="wilson")
            assert (lo, hi) == pytest.approx(ref, abs=1e-12)
    assert wilson_interval(0, 0) is None


def test_binomial_test_matches_scipy():
    for n in [1, 2, 5, 10, 33, 200, 1001]:
        for k in sorted({0, 1, n // 4, n // 2, (n + 1) // 2, n - 1, n}):
            assert binomial_test(k, n) == pytest.approx(stats.binomtest(k, n).pvalue, rel=1e-9)
            for p in (0.3, 0.45):
                for alt in ("greater", "less", "two-sided"):
                    ref = stats.binomtest(k, n, p, alternative=alt).pvalue
                    assert binomial_test(k, n, p, alt) == pytest.approx(ref, rel=1e-9, abs=1e-15)
    assert binomial_test(0, 0) is None


def test_holm_matches_statsmodels(no_gc_in_multipletests):
    rng = np.random.default_rng(3)
    for m in [1, 2, 6, 20]:
        for _ in range(20):
            p = rng.uniform(0, 0.2, m) ** rng.uniform(0.5, 3)
            ref = multipletests(p, method="holm")[1]
            assert holm(list(p)) == pytest.approx(list(ref), abs=1e-12)
    # ties among p-values and None entries (cells without decisive votes) outside the family
    p = [0.01, None, 0.04, 0.01, 0.03, None]
    ref = multipletests([0.01, 0.04, 0.01, 0.03], method="holm")[1]
    got = holm(p)
    assert got[1] is None and got[5] is None
    assert [got[i] for i in (0, 2, 3, 4)] == pytest.approx(list(ref), abs=1e-12)
    assert holm([]) == []


def test_non_inferiority_exact_test_and_matching_bound():
    for wins, losses, margin, alpha in [
        (30, 20, 0.1, 0.05),
        (45, 55, 0.1, 0.05),
        (40, 60, 0.05, 0.025),
        (0, 10, 0.2, 0.05),
        (10, 0, 0.0, 0.05),
        (120, 130, 0.05, 0.05),
    ]:
        r = non_inferiority(wins, losses, margin, alpha)
        n = wins + losses
        ref = stats.binomtest(wins, n, 0.5 - margin, alternative="greater")
        assert r.null_rate == pytest.approx(0.5 - margin)
        assert r.p_value == pytest.approx(ref.pvalue, rel=1e-9)
        ci = ref.proportion_ci(confidence_level=1 - alpha, method="exact")
        assert r.lower_bound == pytest.approx(ci.low, abs=1e-9)
        # a two-sided Clopper-Pearson interval at 1 - 2 alpha has the same lower end
        assert r.lower_bound == pytest.approx(
            proportion_confint(wins, n, alpha=2 * alpha, method="beta")[0], abs=1e-9
        )
        assert r.non_inferior == (r.p_value <= alpha)
        assert r.non_inferior == (r.null_rate <= r.lower_bound)
    empty = non_inferiority(0, 0, 0.1)
    assert empty.p_value is None and empty.lower_bound is None and not empty.non_inferior
    with pytest.raises(ValueError):
        non_inferiority(1, 1, 0.6)
    assert clopper_pearson_lower(0, 10) == 0.0


# ----------------------------------------------------------------------------------- power
def test_exact_power_matches_brute_force_rejection_region():
    for n in [1, 5, 6, 10, 25, 60, 137]:
        region = [k for k in range(n + 1) if stats.binomtest(k, n).pvalue <= 0.05]
        for rate in (0.5, 0.6, 0.8):
            ref = sum(stats.binom.pmf(k, n, rate) for k in region)
            assert exact_power(n, rate) == pytest.approx(ref, abs=1e-12)


def test_required_votes_exact_is_smallest_n_that_stays_above_target():
    for rate in (0.3, 0.62, 0.7, 0.9):
        n, method = required_decisive_votes(rate)
        assert method == "exact"
        powers = exact_power(np.arange(1, 3 * n + 50), rate)
        assert (powers[n - 1 :] >= 0.8).all()
        assert powers[n - 2] < 0.8


def test_required_votes_normal_matches_statsmodels():
    for rate in (0.52, 0.55, 0.6, 0.35, 0.505):
        h = proportion_effectsize(rate, 0.5)
        ref = NormalIndPower().solve_power(effect_size=h, alpha=0.05, power=0.8, ratio=0)
        n, method = required_decisive_votes(rate, method="normal")
        assert method == "normal"
        assert n == math.ceil(ref - 1e-9)
    # tiny effects switch to the normal approximation automatically
    assert required_decisive_votes(0.505)[1] == "normal"
    assert required_decisive_votes(0.5) == (None, None)


def test_power_rows_in_summary():
    counts = table_of(simulate(seed=1, rates={"overall_quality": 0.7})).counts()
    s = pairwise_summary(counts, pairs=[("lightning", "animatediff")])
    row = next(r for r in s.power if r.criterion == "overall_quality")
    assert row.method == "exact" and row.needed_decisive is not None
    assert row.additional_decisive == max(0, row.needed_decisive - row.n_decisive)
    assert PEEKING_WARNING in s.warnings
    # an exactly null effect: no finite sample size
    tied = VoteCounts.from_grouped(
        [
            ("overall_quality", "x", "lightning", "animatediff", "left", 10),
            ("overall_quality", "x", "animatediff", "lightning", "left", 10),
        ],
        arms=ARMS,
        criteria=("overall_quality",),
    )
    row = pairwise_summary(tied).power[0]
    assert row.effect == 0 and row.needed_decisive is None and row.additional_decisive is None


def test_peeking_really_inflates_false_positives():
    """The warning's claim: 5 looks at alpha=0.05 under the null reject far more than 5%."""
    rng = np.random.default_rng(0)
    sims, per_look, looks = 20000, 100, 5
    wins = rng.binomial(per_look, 0.5, size=(sims, looks)).cumsum(axis=1)
    ns = per_look * np.arange(1, looks + 1)
    p = np.minimum(1, 2 * stats.binom.cdf(np.minimum(wins, ns - wins), ns, 0.5))
    assert (p[:, -1] <= 0.05).mean() < 0.06  # one look: fine
    assert (p <= 0.05).any(axis=1).mean() > 0.10  # any of five looks: inflated


def test_alpha_spending():
    obf = alpha_spending([0.2, 0.4, 0.6, 0.8, 1.0])
    assert obf[-1] == pytest.approx(0.05)
    assert all(a < b for a, b in itertools.pairwise(obf)) and obf[0] < 0.001
    assert alpha_spending([1.0], kind="pocock")[0] == pytest.approx(0.05)
    note = sequential_note()
    assert note.warning == PEEKING_WARNING and note.alpha_spending[-1][1] == pytest.approx(0.05)


# ------------------------------------------------------------------------- Bradley-Terry
def _choix_data(wins: np.ndarray) -> list[tuple[int, int]]:
    return [(i, j) for i in range(len(wins)) for j in range(len(wins)) for _ in range(wins[i, j])]


def test_bradley_terry_without_ties_matches_choix():
    rng = np.random.default_rng(5)
    true = np.array([0.0, 0.5, -0.4, 1.0])
    wins = np.zeros((4, 4), dtype=int)
    for i, j in itertools.combinations(range(4), 2):
        n = 80
        w = rng.binomial(n, 1 / (1 + np.exp(true[j] - true[i])))
        wins[i, j], wins[j, i] = w, n - w
    data = _choix_data(wins)
    ridge = 0.01
    theta, nu, converged, _ = fit_davidson(wins, ridge=ridge)
    assert converged and nu == 0.0
    # same penalised objective: choix adds alpha * ||theta||^2, we add ridge / 2 * ||theta||^2
    ref = choix.opt_pairwise(4, data, alpha=ridge / 2, method="Newton-CG", tol=1e-12)
    assert theta == pytest.approx(ref - ref.mean(), abs=1e-6)
    # the plain maximum-likelihood estimate (I-LSR) with a negligible ridge
    theta_ml, *_ = fit_davidson(wins, ridge=1e-9)
    ml = choix.ilsr_pairwise(4, data, alpha=0.0, tol=1e-12)
    assert theta_ml == pytest.approx(ml - ml.mean(), abs=1e-5)


def _davidson_nll(params: np.ndarray, wins: np.ndarray, ties: np.ndarray, ridge: float) -> float:
    """Negative log-likelihood written straight from Davidson (1970) in pi and nu."""
    k = len(wins)
    pi = np.exp(params[:k])
    nu = np.exp(params[k])
    total = 0.5 * ridge * np.sum(params[:k] ** 2)
    for i, j in itertools.combinations(range(k), 2):
        d = pi[i] + pi[j] + nu * np.sqrt(pi[i] * pi[j])
        total -= wins[i, j] * np.log(pi[i] / d) + wins[j, i] * np.log(pi[j] / d)
        total -= ties[i, j] * np.log(nu * np.sqrt(pi[i] * pi[j]) / d)
    return total


def test_davidson_with_ties_matches_direct_likelihood_maximisation():
    wins = np.array([[0, 30, 22], [14, 0, 25], [18, 12, 0]])
    ties = np.triu(np.array([[0, 20, 9], [0, 0, 15], [0, 0, 0]]))
    ridge = 0.01
    theta, nu, converged, _ = fit_davidson(wins, ties, ridge=ridge)
    assert converged
    res = optimize.minimize(
        _davidson_nll, np.zeros(4), args=(wins, ties, ridge), method="BFGS", tol=1e-12
    )
    ref_theta = res.x[:3] - res.x[:3].mean()
    assert theta == pytest.approx(ref_theta, abs=1e-5)
    assert nu == pytest.approx(np.exp(res.x[3]), rel=1e-5)
    assert _davidson_nll(np.append(theta, np.log(nu)), wins, ties, ridge) <= res.fun + 1e-9


def test_davidson_two_arms_closed_form_and_edge_cases():
    # two arms: pi_1 / pi_0 = w1 / w0 and nu = T / sqrt(w0 w1) (negligible ridge)
    theta, nu, _, _ = fit_davidson(
        np.array([[0, 40], [60, 0]]), np.array([[0, 25], [0, 0]]), ridge=1e-10
    )
    assert theta[1] - theta[0] == pytest.approx(math.log(60 / 40), abs=1e-6)
    assert nu == pytest.approx(25 / math.sqrt(40 * 60), rel=1e-6)
    # separation: an arm that never lost keeps a finite strength
    theta, nu, converged, _ = fit_davidson(np.array([[0, 0], [50, 0]]), ridge=0.01)
    assert converged and np.isfinite(theta).all() and theta[1] > 2
    # every vote a tie: equal strengths, nu unbounded (None)
    theta, nu, _, _ = fit_davidson(np.zeros((3, 3)), np.triu(np.full((3, 3), 5), 1))
    assert nu is None and theta == pytest.approx([0, 0, 0], abs=1e-9)
    # arms never compared with each other: the ridge keeps every strength defined
    wins = np.zeros((4, 4))
    wins[0, 1], wins[1, 0], wins[2, 3], wins[3, 2] = 30, 10, 5, 25
    theta, nu, converged, _ = fit_davidson(wins, ridge=0.01)
    assert converged and np.isfinite(theta).all() and theta.sum() == pytest.approx(0, abs=1e-9)
    assert theta[0] - theta[1] == pytest.approx(math.log(3), abs=0.02)
    # no data at all
    theta, nu, _, _ = fit_davidson(np.zeros((3, 3)))
    assert theta == pytest.approx([0, 0, 0]) and nu == 0.0


def test_equal_strengths_share_a_rank_whatever_the_order_of_arms():
    def vote(n, left, right):
        return VoteRecord(n, "t", f"e{n}", "q", left, right, "left", trial_id=n)

    # x and y split evenly, and each beats z 8 to 2
    games = [("x", "y")] * 5 + [("y", "x")] * 5 + [("x", "z"), ("y", "z")] * 8
    games += [("z", "x"), ("z", "y")] * 2
    records = [vote(n, a, b) for n, (a, b) in enumerate(games)]
    for arms in itertools.permutations(("x", "y", "z")):
        empty = bradley_terry(VoteCounts.empty(arms=arms, criteria=("q",)))[0]
        assert [s.rank for s in empty.strengths] == [1, 1, 1]  # nothing known: no leader
        fit = bradley_terry(table_of(records, arms=arms, criteria=("q",)).counts())[0]
        assert {s.arm: s.rank for s in fit.strengths} == {"x": 1, "y": 1, "z": 3}


def test_bradley_terry_recovers_known_strengths_with_prompt_bootstrap():
    arms = ("a", "b", "c")
    true = {"a": 0.0, "b": 0.6, "c": -0.6}
    records = simulate(
        seed=11,
        arms=arms,
        criteria=("overall_quality",),
        strengths=true,
        n_prompts=80,
        n_evaluators=40,
        trials_per_evaluator=40,
    )
    table = table_of(records, arms=arms, criteria=("overall_quality",))
    boot = bootstrap_summary(table, n_boot=300, seed=1)
    bt = boot.bradley_terry[0]
    assert bt.model == "davidson" and bt.converged and bt.n_boot == 300
    assert 0.6 < bt.tie_parameter < 1.3  # nu / (2 + nu) = 0.3 for equal strengths: nu = 0.86
    for s in bt.strengths:
        assert s.ci_low <= true[s.arm] <= s.ci_high, s
    best = {s.arm: s for s in bt.strengths}
    assert best["b"].rank == 1 and best["b"].p_best > 0.9
    assert sum(s.p_best for s in bt.strengths) == pytest.approx(1.0)
    # the point estimates equal the cheap count-based fit
    cheap = bradley_terry(table.counts())[0]
    assert [s.strength for s in cheap.strengths] == pytest.approx(
        [s.strength for s in bt.strengths], abs=1e-9
    )
    # deterministic for a seed, and independent of the order of the records
    shuffled = list(records)
    random.Random(0).shuffle(shuffled)
    again = bootstrap_summary(table_of(shuffled, arms, ("overall_quality",)), n_boot=300, seed=1)
    assert again == boot


def test_prompt_bootstrap_coverage_by_simulation():
    """Bradley-Terry bootstrap intervals cover the true strengths about 95% of the time, and the
    bootstrap spread matches the sampling spread of the estimates (4 arms, 30% ties)."""
    arms = ("a", "b", "c", "d")
    true = np.array([0.0, 0.3, -0.3, 0.6])
    true -= true.mean()
    pairs = list(itertools.combinations(range(4), 2))
    rng = np.random.default_rng(123)
    n = 3000
    estimates, covered, widths = [], [], []
    for rep in range(80):
        which = rng.integers(0, len(pairs), n)
        i = np.array([pairs[k][0] for k in which])
        j = np.array([pairs[k][1] for k in which])
        j_wins = rng.random(n) < 1 / (1 + np.exp(true[i] - true[j]))
        i_left = rng.random(n) < 0.5
        left, right = np.where(i_left, i, j), np.where(i_left, j, i)
        winner = np.where(j_wins, j, i)
        choice = np.where(rng.random(n) < 0.3, "tie", np.where(winner == left, "left", "right"))
        table = VoteTable.from_columns(
            prompt_id=rng.integers(0, 200, n),
            theme=["t"] * n,
            evaluator=rng.integers(0, 50, n),
            criterion=["q"] * n,
            left_arm=np.array(arms)[left],
            right_arm=np.array(arms)[right],
            choice=choice,
            arms=arms,
            criteria=["q"],
        )
        bt = bootstrap_summary(table, n_boot=200, seed=rep).bradley_terry[0]
        est = np.array([s.strength for s in bt.strengths])
        lo = np.array([s.ci_low for s in bt.strengths])
        hi = np.array([s.ci_high for s in bt.strengths])
        estimates.append(est)
        covered.append((lo <= true) & (true <= hi))
        widths.append(hi - lo)
    estimates = np.array(estimates)
    assert np.abs(estimates.mean(axis=0) - true).max() < 0.03  # (nearly) unbiased
    assert 0.88 < np.mean(covered) < 0.99
    ratio = (np.mean(widths, axis=0) / 3.92) / estimates.std(axis=0)
    assert ((ratio > 0.75) & (ratio < 1.33)).all(), ratio


# ---------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_krippendorff_matches_reference_package(level):
    rng = np.random.default_rng(2)
    for _ in range(10):
        data = rng.integers(0, 3, size=(6, 40)).astype(float)
        # agreement structure: most coders copy a unit's "true" value
        truth = rng.integers(0, 3, size=40)
        copy = rng.random((6, 40)) < 0.6
        data[copy] = np.broadcast_to(truth, (6, 40))[copy]
        data[rng.random((6, 40)) < 0.3] = np.nan
        ours = krippendorff_alpha(data, level=level)
        ref = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
        assert ours == pytest.approx(ref, abs=1e-10)


def test_agreement_uses_arm_relative_values():
    """Evaluators who all prefer the same arm agree, although they saw it on different sides."""
    records = []
    rng = random.Random(4)
    for m in range(30):
        winner = "lightning" if m % 3 else "animatediff"
        for ev in range(4):
            left, right = ("lightning", "animatediff") if rng.random() < 0.5 else ARMS
            choice = "left" if left == winner else "right"
            if m % 10 == 0:
                choice = "tie"  # some units are ties for everyone
            records.append(
                VoteRecord(
                    m,
                    "t",
                    f"e{ev}",
                    "overall_quality",
                    left,
                    right,
                    choice,
                    trial_id=m * 10 + ev,
                    matchup_id=m,
                )
            )
    table = table_of(records, criteria=("overall_quality",))
    res = agreement(table)[0]
    assert res.alpha == pytest.approx(1.0) and res.n_units == 30 and res.n_coders == 4
    # coding the clicked SIDE instead would hide that agreement
    side = np.full((4, 30), np.nan)
    for r in records:
        side[int(r.evaluator[1:]), r.matchup_id] = ("left", "right", "tie").index(r.choice)
    assert krippendorff.alpha(reliability_data=side, level_of_measurement="nominal") < 0.5


def winner_of(r: VoteRecord) -> str:
    return {"left": r.left_arm, "right": r.right_arm}.get(r.choice, "tie")


def reference_alpha(records, criterion: str, level: str, *, seed: int = 0) -> tuple[float, int]:
    """(alpha, pairable matchups) from the `krippendorff` package over first showings: each
    matchup coded with its two arms taken in a random order, then once more the other way round
    (its mirror image)."""
    rng = random.Random(seed)
    firsts = [r for r in records if r.criterion == criterion and not r.is_repeat]
    units = sorted({r.matchup_id for r in firsts})
    coders = sorted({r.evaluator for r in firsts})
    arms = {u: rng.sample(sorted(u[1:]), 2) for u in units}  # matchup_id = (prompt, a, b)
    data = np.full((len(coders), len(units)), np.nan)
    for r in firsts:
        i, j = coders.index(r.evaluator), units.index(r.matchup_id)
        if np.isnan(data[i, j]):
            data[i, j] = {arms[r.matchup_id][0]: 0, "tie": 1, arms[r.matchup_id][1]: 2}[
                winner_of(r)
            ]
    pairable = int(((~np.isnan(data)).sum(axis=0) >= 2).sum())
    both = np.hstack([data, 2 - data])
    return krippendorff.alpha(reliability_data=both, level_of_measurement=level), pairable


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
@pytest.mark.parametrize("arms", [ARMS, ("lightning", "animatediff", "cogvideo")])
def test_agreement_matches_reference_on_simulated_votes(level, arms):
    strengths = {"lightning": 0.8, "animatediff": 0.0, "cogvideo": -0.4} if len(arms) > 2 else None
    records = simulate(
        seed=8,
        arms=arms,
        rates={"overall_quality": 0.8},
        strengths=strengths,
        n_prompts=15,
        n_evaluators=12,
        repeat_share=0.2,
    )
    results = {r.criterion: r for r in agreement(table_of(records, arms=arms), level=level)}
    for crit in ("overall_quality", "motion_amplitude"):
        for seed in range(3):  # whichever way round each matchup is first coded
            ref, pairable = reference_alpha(records, crit, level, seed=seed)
            assert results[crit].alpha == pytest.approx(ref, abs=1e-10)
            assert results[crit].n_units == pairable
            assert results[crit].level == level


def test_alpha_of_independent_evaluators_sharing_a_preference_by_simulation():
    """Evaluators answering independently (tie with probability t, else the preferred arm with
    probability p) agree on a pair with probability t^2 + (1 - t)^2 (p^2 + (1 - p)^2); answers
    given without regard to which clip is which agree with probability t^2 + (1 - t)^2 / 2.
    Alpha is the agreement beyond the latter, whichever arm each pair names first."""
    for p, t in [(0.5, 0.3), (0.8, 0.3), (0.95, 0.0), (0.7, 0.6)]:
        records = simulate(
            seed=12,
            criteria=("q",),
            rates={"q": p},
            tie_rate=t,
            n_prompts=200,
            n_evaluators=40,
            trials_per_evaluator=100,
        )
        agree = t**2 + (1 - t) ** 2 * (p**2 + (1 - p) ** 2)
        chance = t**2 + (1 - t) ** 2 / 2
        alpha = agreement(table_of(records, criteria=("q",)))[0].alpha
        assert alpha == pytest.approx((agree - chance) / (1 - chance), abs=0.02), (p, t)


def test_every_statistic_ignores_the_order_of_arms_criteria_and_votes(no_gc_in_multipletests):
    """The same votes, arms and criteria listed in every order and votes shuffled: every
    statistic is the same, arm by arm and criterion by criterion."""
    arms = ("lightning", "animatediff", "cogvideo")
    criteria = ("overall_quality", "motion_amplitude", "video_text_relevance")
    records = simulate(
        seed=21,
        arms=arms,
        criteria=criteria,
        strengths={"lightning": 0.6, "animatediff": 0.0, "cogvideo": -0.3},
        n_prompts=12,
        n_evaluators=10,
        trials_per_evaluator=24,
        repeat_share=0.3,
        repeat_noise=0.4,
    )
    pairs = [("lightning", "animatediff"), ("cogvideo", "lightning"), ("animatediff", "cogvideo")]
    filters = [{}, {"exclude_flagged": True}, {"exclude_evaluators": {"ev1", "ev4"}}]

    def statistics(arm_order, crit_order, votes):
        table = VoteTable.from_records(votes, arms=arm_order, criteria=crit_order)
        out = {}
        for i, options in enumerate(filters):
            counts = table.counts(**options)
            found = [
                *pairwise_summary(counts, pairs=pairs, margin=0.1).overall,
                *pairwise_summary(counts, pairs=pairs).by_theme,
                *pairwise_summary(counts, pairs=pairs).power,
                *pairwise_summary(counts).position_bias,
                *pairwise_summary(counts).arm_preference,
                *agreement(table, **options),
                *evaluator_quality(table, **options),
            ]
            boot = bootstrap_summary(table, n_boot=200, seed=3, pairs=pairs, **options)
            found += boot.win_rates
            for source, fits in (("point", bradley_terry(counts)), ("boot", boot.bradley_terry)):
                for bt in fits:
                    found += [((source, bt.criterion), s) for s in bt.strengths]
                    found.append(((source, None), dataclasses.replace(bt, strengths=())))
            for r in found:
                crit, r = r if isinstance(r, tuple) else (None, r)
                row = r.as_row()
                names = ("criterion", "theme", "arm", "opponent", "evaluator", "n_boot")
                key = (i, type(r).__name__, crit, *(row.get(n) for n in names))
                assert key not in out, key
                out[key] = row
        return out

    reference = statistics(arms, criteria, records)
    assert any(k[1] == "AgreementResult" and v["alpha"] for k, v in reference.items())
    shuffled = list(records)
    random.Random(5).shuffle(shuffled)
    for n, arm_order in enumerate(itertools.permutations(arms)):
        crit_order = criteria[n % 3 :] + criteria[: n % 3]
        got = statistics(arm_order, crit_order, shuffled if n % 2 else records)
        assert set(got) == set(reference)
        for key, row in reference.items():
            assert set(got[key]) == set(row)
            for name, value in row.items():
                if isinstance(value, float):
                    assert math.isclose(got[key][name], value, rel_tol=1e-9, abs_tol=1e-9), (
                        arm_order,
                        key,
                        name,
                    )
                else:
                    assert got[key][name] == value, (arm_order, key, name)


def test_agreement_and_evaluator_quality_use_only_the_selected_votes():
    """Repeat consistency (and alpha, and evaluator quality) from exactly the votes a filter
    keeps: a repeat pair counts only when both of its votes are kept. Checked by hand and
    against the statistics of a table built from the kept votes alone."""
    records = simulate(seed=11, n_evaluators=10, repeat_share=0.5, repeat_noise=0.5)
    table = table_of(records)
    assert sum(r.flagged and r.is_repeat for r in records) > 0
    seen = set()
    for options in [
        {},
        {"exclude_flagged": True},
        {"exclude_evaluators": {"ev1", "ev2"}},
        {"exclude_flagged": True, "exclude_evaluators": {"ev3"}},
    ]:
        drop = options.get("exclude_evaluators", set())
        kept = [
            r
            for r in records
            if r.evaluator not in drop and not (options.get("exclude_flagged") and r.flagged)
        ]
        results = agreement(table, **options)
        filtered = table.where(table.mask(include_repeats=True, **options))
        assert agreement(filtered) == results  # filtering first is the same
        alone = agreement(table_of(kept))
        for r, a in zip(results, alone, strict=True):
            assert dataclasses.astuple(r) == pytest.approx(dataclasses.astuple(a), abs=1e-12)
        for r in results:
            first: dict[tuple, str] = {}  # the earliest showing (votes are in trial order)
            for v in kept:
                if v.criterion == r.criterion and not v.is_repeat:
                    first.setdefault((v.evaluator, v.matchup_id), winner_of(v))
            same = [
                first[(v.evaluator, v.matchup_id)] == winner_of(v)
                for v in kept
                if v.criterion == r.criterion
                and v.is_repeat
                and (v.evaluator, v.matchup_id) in first
            ]
            assert r.n_repeat_comparisons == len(same) > 0
            assert r.repeat_consistency == pytest.approx(sum(same) / len(same))
            assert r.alpha == pytest.approx(reference_alpha(kept, r.criterion, "nominal")[0])
        seen.add(sum(r.n_repeat_comparisons for r in results))
        quality = evaluator_quality(table, **options)
        assert quality == evaluator_quality(table_of(kept))
        assert {q.evaluator for q in quality} == {v.evaluator for v in kept}
    assert len(seen) == 4  # every filter changes the repeat pairs


def test_evaluator_quality_and_repeat_consistency():
    records = simulate(seed=9, n_evaluators=6, repeat_share=0.3, repeat_noise=0.0)
    table = table_of(records)
    quality = {q.evaluator: q for q in evaluator_quality(table)}
    assert set(quality) == {f"ev{i}" for i in range(6)}
    for q in quality.values():
        assert q.n_repeat_comparisons > 0 and q.consistency == pytest.approx(1.0)
        mine = [r for r in records if r.evaluator == q.evaluator]
        trials = {r.trial_id for r in mine}
        flagged = {r.trial_id for r in mine if r.flagged}
        assert q.n_trials == len(trials) and q.n_votes == len(mine)
        assert q.flagged_share == pytest.approx(len(flagged) / len(trials))
        decisive = [r for r in mine if r.choice != "tie"]
        assert q.left_rate == pytest.approx(
            sum(r.choice == "left" for r in decisive) / len(decisive)
        )
    noisy = table_of(simulate(seed=9, n_evaluators=6, repeat_share=0.5, repeat_noise=1.0))
    consistency = [q.consistency for q in evaluator_quality(noisy)]
    assert all(c is not None and c < 0.9 for c in consistency)
    per_criterion = agreement(noisy)
    assert all(a.n_repeat_comparisons > 0 and a.repeat_consistency < 0.9 for a in per_criterion)


def test_hand_made_repeat_counts():
    def vote(ev, trial, choice, left, repeat, crit="overall_quality"):
        right = "animatediff" if left == "lightning" else "lightning"
        return VoteRecord(
            1,
            "t",
            ev,
            crit,
            left,
            right,
            choice,
            trial_id=trial,
            is_repeat=repeat,
            matchup_id=7,
            flagged=trial == 2,
        )

    records = [
        vote("a", 1, "left", "lightning", False),
        vote("a", 2, "right", "animatediff", True),  # same arm (lightning), other side: consistent
        vote("a", 1, "tie", "lightning", False, "motion_amplitude"),
        vote("a", 2, "left", "animatediff", True, "motion_amplitude"),  # changed its mind
    ]
    q = evaluator_quality(table_of(records))[0]
    assert (q.n_trials, q.n_flagged_trials, q.n_repeat_comparisons) == (2, 1, 2)
    assert q.consistency == 0.5 and q.flagged_share == 0.5
    # repeats stay out of the preference counts
    s = summarize(records, arms=ARMS, criteria=CRITERIA)
    assert s.n_votes == 2
    assert summarize(records, arms=ARMS, criteria=CRITERIA, include_repeats=True).n_votes == 4


# -------------------------------------------------------- counting, tables and robustness
def test_counts_from_records_columns_and_grouped_rows_agree():
    records = simulate(seed=2, rates={"overall_quality": 0.7})
    table = table_of(records)
    columns = {
        f.name: [getattr(r, f.name) for r in records] for f in dataclasses.fields(VoteRecord)
    }
    columns["prompt_id"] = np.array(columns["prompt_id"])  # numpy columns work too
    from_columns = VoteTable.from_columns(**columns, arms=ARMS, criteria=CRITERIA)
    grouped: dict[tuple, int] = {}
    for r in records:
        if not r.is_repeat:
            key = (r.criterion, r.theme, r.left_arm, r.right_arm, r.choice)
            grouped[key] = grouped.get(key, 0) + 1
    from_rows = VoteCounts.from_grouped(
        [(*k, n) for k, n in grouped.items()], arms=ARMS, criteria=CRITERIA
    )
    assert np.array_equal(table.counts().cube, from_columns.counts().cube)
    assert np.array_equal(table.counts().cube, from_rows.cube)
    assert table.counts().themes == from_rows.themes == tuple(sorted(THEMES))
    assert pairwise_summary(table.counts()) == pairwise_summary(from_rows)


def test_summary_matches_references_cell_by_cell(no_gc_in_multipletests):
    records = simulate(seed=3, rates={"overall_quality": 0.65})
    s = summarize(records, arms=ARMS, criteria=CRITERIA, pairs=[("lightning", "animatediff")])
    for r in s.overall + s.by_theme:
        mine = [
            v
            for v in records
            if v.criterion == r.criterion
            and not v.is_repeat
            and (r.theme is None or v.theme == r.theme)
        ]
        winners = [{"left": v.left_arm, "right": v.right_arm}.get(v.choice, "tie") for v in mine]
        w, l_, t = winners.count("lightning"), winners.count("animatediff"), winners.count("tie")
        assert (r.wins, r.losses, r.ties) == (w, l_, t)
        assert r.win_rate == pytest.approx(w / (w + l_))
        assert (r.ci_low, r.ci_high) == pytest.approx(
            proportion_confint(w, w + l_, method="wilson"), abs=1e-12
        )
        assert r.p_value == pytest.approx(stats.binomtest(w, w + l_).pvalue, rel=1e-9)
        assert r.tie_rate == pytest.approx(t / len(mine))
    ref = multipletests([r.p_value for r in s.overall], method="holm")[1]
    assert [r.p_holm for r in s.overall] == pytest.approx(list(ref), abs=1e-12)
    ref = multipletests([r.p_value for r in s.by_theme], method="holm")[1]
    assert [r.p_holm for r in s.by_theme] == pytest.approx(list(ref), abs=1e-12)
    for pb in s.position_bias:
        assert pb.p_value == pytest.approx(stats.binomtest(pb.left, pb.n_decisive).pvalue)


def test_orientation_of_pairs():
    counts = table_of(simulate(seed=4, rates={"overall_quality": 0.7})).counts()
    fwd = pairwise_summary(counts, pairs=[("lightning", "animatediff")], margin=0.1)
    rev = pairwise_summary(counts, pairs=[("animatediff", "lightning")], margin=0.1)
    for a, b in zip(fwd.overall, rev.overall, strict=True):
        assert (a.wins, a.ties, a.losses) == (b.losses, b.ties, b.wins)
        assert a.win_rate == pytest.approx(1 - b.win_rate)
        assert a.p_value == pytest.approx(b.p_value)
        assert a.non_inferiority is not None and a.non_inferiority.margin == 0.1
    q = next(r for r in fwd.overall if r.criterion == "overall_quality")
    assert q.non_inferiority.non_inferior
    q = next(r for r in rev.overall if r.criterion == "overall_quality")
    assert not q.non_inferiority.non_inferior
    with pytest.raises(ValueError):
        pairwise_summary(counts, pairs=[("lightning", "nope")])


def test_empty_and_degenerate_inputs():
    empty = summarize([], arms=ARMS, criteria=CRITERIA)
    assert empty.n_votes == 0 and len(empty.overall) == len(CRITERIA) and empty.by_theme == ()
    assert all(r.win_rate is None and r.p_value is None and r.p_holm is None for r in empty.overall)
    assert all(p.needed_decisive is None for p in empty.power)
    assert "No votes yet." in empty.warnings
    table = table_of([])
    assert bootstrap_summary(table, n_boot=50).bradley_terry[0].strengths[0].ci_low is None
    assert all(a.alpha is None for a in agreement(table))
    assert evaluator_quality(table) == ()
    assert bradley_terry(VoteCounts.empty(arms=ARMS, criteria=CRITERIA))[0].converged

    # a single arm, and unknown arms / criteria / choices are dropped and reported
    one = summarize(
        [VoteRecord(1, None, "e", "overall_quality", "x", "y", "left")],
        arms=("x",),
        criteria=("overall_quality",),
    )
    assert one.overall == () and any("ignored" in w for w in one.warnings)

    # all ties
    ties = [
        VoteRecord(p, None, "e", "overall_quality", "lightning", "animatediff", "tie", trial_id=p)
        for p in range(20)
    ]
    s = summarize(ties, arms=ARMS, criteria=("overall_quality",))
    r = s.overall[0]
    assert (r.ties, r.n_decisive, r.tie_rate, r.win_rate, r.p_value) == (20, 0, 1.0, None, None)
    assert s.themes == (NO_THEME,)
    boot = bootstrap_summary(table_of(ties, criteria=("overall_quality",)), n_boot=50)
    assert boot.bradley_terry[0].tie_parameter is None
    assert boot.win_rates[0].ci_low is None


def test_results_render_as_json_and_flat_rows():
    s = summarize(simulate(seed=5), arms=ARMS, criteria=CRITERIA, margin=0.1)
    json.dumps(dataclasses.asdict(s))
    row = s.overall[0].as_row()
    assert {"wins", "ci_low", "p_holm", "non_inferiority_p_value"} <= set(row)
    assert all(not isinstance(v, dict | list | tuple) for v in row.values())
    boot = bootstrap_summary(table_of(simulate(seed=5)), n_boot=20)
    json.dumps(dataclasses.asdict(boot))


def test_large_columnar_input_counts():
    """1M-scale path: numpy columns straight in, one bincount out (timings: see the report)."""
    n = 200_000
    rng = np.random.default_rng(0)
    crit = np.array(CRITERIA)[rng.integers(0, 6, n)]
    left_is_l = rng.random(n) < 0.5
    table = VoteTable.from_columns(
        prompt_id=rng.integers(0, 100, n),
        theme=np.array(THEMES)[rng.integers(0, 5, n)],
        evaluator=rng.integers(0, 500, n),
        criterion=crit,
        left_arm=np.where(left_is_l, "lightning", "animatediff"),
        right_arm=np.where(left_is_l, "animatediff", "lightning"),
        choice=np.array(["left", "right", "tie"])[rng.integers(0, 3, n)],
        arms=ARMS,
        criteria=CRITERIA,
    )
    counts = table.counts()
    assert counts.n_votes == n
    s = pairwise_summary(counts)
    assert sum(r.n_votes for r in s.overall) == n


# ------------------------------------------------------------------------------ simulation
def test_simulated_study_recovers_known_preferences():
    """p = 0.7 for Lightning on overall quality, 0.5 elsewhere, 30% ties.

    Simultaneous statements (all six intervals cover, no null criterion rejected) use
    Bonferroni-level intervals and Holm p-values, so that they hold with >= 95% probability for
    any seed; per-interval coverage is measured in the next tests."""
    records = simulate(seed=22, rates={"overall_quality": 0.7}, n_prompts=80, n_evaluators=40)
    table = table_of(records)
    s = pairwise_summary(
        table.counts(), pairs=[("lightning", "animatediff")], margin=0.1, confidence=1 - 0.05 / 6
    )
    for r in s.overall:
        truth = 0.7 if r.criterion == "overall_quality" else 0.5
        assert r.ci_low <= truth <= r.ci_high, r
        assert r.tie_rate == pytest.approx(0.3, abs=0.05)
        if r.criterion == "overall_quality":
            assert r.p_holm < 1e-6 and r.non_inferiority.non_inferior
        else:
            assert r.p_holm > 0.01
    assert all(pb.p_value > 0.01 for pb in s.position_bias)  # no bias injected
    boot = bootstrap_summary(
        table, n_boot=200, seed=3, pairs=[("lightning", "animatediff")], confidence=1 - 0.05 / 6
    )
    for wr in boot.win_rates:
        truth = 0.7 if wr.criterion == "overall_quality" else 0.5
        assert wr.ci_low <= truth <= wr.ci_high, wr
    bt = next(b for b in boot.bradley_terry if b.criterion == "overall_quality")
    gap = math.log(0.7 / 0.3)  # theta_lightning - theta_animatediff
    lightning = next(x for x in bt.strengths if x.arm == "lightning")
    assert lightning.ci_low <= gap / 2 <= lightning.ci_high
    assert lightning.strength == pytest.approx(gap / 2, abs=0.15)


def test_position_bias_is_detected_when_injected():
    records = simulate(seed=22, left_bias=0.25)
    s = summarize(records, arms=ARMS, criteria=CRITERIA, confidence=1 - 0.05 / 6)
    assert all(pb.p_value < 1e-3 and pb.left_rate > 0.55 for pb in s.position_bias)
    assert any(w.startswith("Position bias") for w in s.warnings)
    # counterbalanced sides: the bias does not move the arm comparison
    assert all(r.ci_low <= 0.5 <= r.ci_high for r in s.overall)
    clean = summarize(simulate(seed=22), arms=ARMS, criteria=CRITERIA)
    assert not any(w.startswith("Position bias") for w in clean.warnings)


def test_wilson_coverage_and_null_p_values_by_simulation():
    """Coverage of 95% Wilson intervals and size of the sign test / Holm, over many studies."""
    rng = np.random.default_rng(7)
    sims, n_votes = 2000, 300
    truth = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.7])  # overall quality last
    decisive = rng.binomial(n_votes, 0.7, size=(sims, 6))  # 30% ties
    wins = rng.binomial(decisive, truth)
    grouped_ok = []
    null_reject = []
    fwer = []
    for s in range(sims):
        cov = []
        pvals = []
        for c in range(6):
            lo, hi = wilson_interval(int(wins[s, c]), int(decisive[s, c]))
            cov.append(lo <= truth[c] <= hi)
            pvals.append(binomial_test(int(wins[s, c]), int(decisive[s, c])))
        grouped_ok.append(cov)
        adj = holm(pvals)
        null_reject.append([p <= 0.05 for p in pvals[:5]])
        fwer.append(any(a <= 0.05 for a in adj[:5]))
    coverage = np.mean(grouped_ok, axis=0)
    assert ((coverage > 0.93) & (coverage < 0.97)).all(), coverage
    assert np.mean(null_reject) < 0.06  # exact test: at most alpha (conservative)
    assert np.mean(fwer) < 0.06  # Holm keeps the family-wise error rate
    uniform = stats.kstest(
        [binomial_test(int(w), int(n)) for w, n in zip(wins[:, 0], decisive[:, 0], strict=True)],
        "uniform",
    )
    assert uniform.statistic < 0.1  # discrete, but close to uniform under the null


# ----------------------------------------------------------------------------------- speed
def test_speed_medians_and_join():
    telemetry = [
        ClipTelemetry("lightning", 0.5, 0.3, 4, 2e9),
        ClipTelemetry("lightning", 0.7, 0.4, 4, 2.2e9),
        ClipTelemetry("lightning", 9.0, None, 4, None),  # a cold start; missing fields
        ClipTelemetry("animatediff", 6.0, 5.0, 50, 4e9),
        ClipTelemetry("animatediff", 7.0, 5.5, 50, 4e9),
        ClipTelemetry("other", 1.0),
    ]
    speed = speed_summary(telemetry, arms=ARMS)
    assert [s.arm for s in speed] == list(ARMS)
    ad, li = speed
    assert (ad.n_clips, ad.median_total_seconds, ad.median_denoiser_passes) == (2, 6.5, 50)
    assert li.median_total_seconds == 0.7 and li.median_denoise_seconds == pytest.approx(0.35)
    assert li.median_peak_memory_bytes == pytest.approx(2.1e9)
    assert speed_summary([]) == ()
    s = summarize(simulate(seed=6, rates={"overall_quality": 0.7}), arms=ARMS, criteria=CRITERIA)
    joined = speed_vs_preference(speed, s.arm_preference, criterion="overall_quality")
    by_arm = {j.arm: j for j in joined}
    assert by_arm["lightning"].preference.win_rate > 0.6
    assert by_arm["lightning"].speed.median_total_seconds == 0.7
    lonely = speed_vs_preference([], s.arm_preference, criterion="overall_quality")
    assert all(j.speed.n_clips == 0 for j in lonely)
