"""Measures beside the votes (issue 17, parts 2 to 4): the logistic slopes and the measure-adjusted
preference (app/analysis/confounds.py) checked against statsmodels fitted directly on the
left/right form of the model, and by simulation with a known truth (benchmarks/confounds.py:
the arms differ in motion and raters prefer the clip that moves less, so the unadjusted win rate
is biased and the adjusted one recovers the true arm effect); then end to end: a study with
votes and stored clip measures carries `adjusted` in summary.json, and its dashboard and report
show the adjusted beside the unadjusted effect."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats

from app.analysis.confounds import (
    ClipTable,
    MeasuredVotes,
    adjusted_effects,
    cluster_logit,
    confound_summary,
    measure_slopes,
)
from app.clips.models import ClipMeasure
from app.dashboard import service as dashboard_service
from app.dashboard.schemas import Filters
from app.exports import report
from app.exports import service as exports_service
from benchmarks.confounds import ARMS, CRITERIA, MOTION, SCENARIOS, Scenario, analyse, simulate
from tests.kit.admin import log_in
from tests.kit.rating import join, link
from tests.kit.studies import rating_study, study_clips
from tests.kit.votes import cast_votes

ADJUSTED_KEYS = {
    "criterion",
    "arm",
    "opponent",
    "covariates",
    "effect",
    "lower",
    "upper",
    "unadjusted_effect",
}


def left_right_design(votes: MeasuredVotes, criterion: str, names: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """The same model written independently in the left/right form: logit P(left wins) =
    side bias + beta * (+1 fast on the left, -1 on the right) + gamma . (left - right)."""
    rows = (votes.criterion == criterion) & (votes.choice != 2)
    fast_left = votes.clips.arm[votes.left_clip[rows]] == "fast"
    columns = [np.ones(rows.sum()), np.where(fast_left, 1.0, -1.0)]
    for name in names:
        v = votes.clips.values[name]
        sd = np.nanstd(v, ddof=1)
        columns.append((v[votes.left_clip[rows]] - v[votes.right_clip[rows]]) / sd)
    y = (votes.choice[rows] == 0).astype(float)
    return y, np.column_stack(columns), votes.prompt[rows]


def test_adjusted_effect_equals_statsmodels_logit_on_the_left_right_form():
    votes = simulate(SCENARIOS[0], np.random.default_rng(3))
    (effect,), notes = adjusted_effects(
        votes, criteria=["appearance"], pairs=[ARMS], covariates=MOTION
    )
    assert notes == ()
    y, x, groups = left_right_design(votes, "appearance", MOTION)
    ref = sm.Logit(y, x).fit(disp=0, cov_type="cluster", cov_kwds={"groups": groups})
    assert effect.log_odds == pytest.approx(ref.params[1], abs=1e-6)
    assert effect.se_cr1 == pytest.approx(ref.bse[1], rel=1e-6)
    assert effect.effect == pytest.approx(1 / (1 + math.exp(-ref.params[1])), abs=1e-9)
    assert effect.n_votes == len(y) and effect.n_prompts == len(np.unique(groups))
    # unadjusted: the same without the measures, on the same votes
    plain = sm.Logit(y, x[:, :2]).fit(disp=0, cov_type="cluster", cov_kwds={"groups": groups})
    assert effect.unadjusted_log_odds == pytest.approx(plain.params[1], abs=1e-6)
    assert effect.unadjusted_effect == pytest.approx(1 / (1 + math.exp(-plain.params[1])))


def test_jackknife_standard_error_is_close_to_refitting_without_each_prompt():
    """The intervals' CR3 standard error (one Newton step per prompt left out) against the
    exact leave-one-prompt-out jackknife refitted by statsmodels."""
    votes = simulate(SCENARIOS[0], np.random.default_rng(5))
    (effect,), _ = adjusted_effects(votes, criteria=["appearance"], pairs=[ARMS], covariates=MOTION)
    y, x, groups = left_right_design(votes, "appearance", MOTION)
    full = sm.Logit(y, x).fit(disp=0).params[1]
    prompts = np.unique(groups)
    left_out = np.array(
        [sm.Logit(y[groups != g], x[groups != g]).fit(disp=0).params[1] for g in prompts]
    )
    exact = math.sqrt((len(prompts) - 1) / len(prompts) * ((left_out - full) ** 2).sum())
    assert effect.se == pytest.approx(exact, rel=0.05)
    assert effect.se > effect.se_cr1  # the jackknife is the wider of the two here
    low, high = effect.lower, effect.upper
    q = stats.t.ppf(0.975, len(prompts) - 1)
    expit = lambda b: 1 / (1 + math.exp(-b))  # noqa: E731
    assert low == pytest.approx(expit(full - q * effect.se))
    assert high == pytest.approx(expit(full + q * effect.se))


def test_slope_equals_statsmodels_and_follows_measured_motion():
    votes = simulate(SCENARIOS[0], np.random.default_rng(7))
    slopes, _ = measure_slopes(votes, criteria=["motion_amplitude", "appearance"])
    rows = (votes.criterion == "motion_amplitude") & (votes.choice != 2)
    v = votes.clips.values["motion_mean"]
    diff = (v[votes.left_clip[rows]] - v[votes.right_clip[rows]]) / np.std(v, ddof=1)
    y = (votes.choice[rows] == 0).astype(float)
    x = np.column_stack([np.ones(len(y)), diff])
    ref = sm.Logit(y, x).fit(disp=0)
    motion = next(
        s for s in slopes if (s.criterion, s.measure) == ("motion_amplitude", "motion_mean")
    )
    assert motion.slope == pytest.approx(ref.params[1], abs=1e-6)
    assert motion.lower > 0  # votes on motion amplitude follow measured motion
    appearance = next(
        s for s in slopes if (s.criterion, s.measure) == ("appearance", "motion_mean")
    )
    assert appearance.upper < 0  # appearance votes go to the clip that moves less
    sharp = [s for s in slopes if s.measure == "sharpness"]
    assert len(sharp) == 2 and all(s.slope is not None for s in sharp)


def test_counted_rows_give_the_same_results_as_the_votes_they_count():
    """The dashboard reads votes counted by SQL GROUP BY: a row of count c must weigh exactly
    as c votes."""
    votes = simulate(SCENARIOS[2], np.random.default_rng(17))
    keys = np.column_stack([
        np.unique(votes.criterion, return_inverse=True)[1].reshape(-1),
        votes.prompt, votes.left_clip, votes.right_clip, votes.choice,
    ])  # fmt: skip
    rows, counts = np.unique(keys, axis=0, return_counts=True)
    assert len(rows) < len(votes) / 4
    counted = MeasuredVotes.build(
        votes.clips, criterion=np.unique(votes.criterion)[rows[:, 0]], prompt=rows[:, 1],
        left_clip=rows[:, 2], right_clip=rows[:, 3], choice=rows[:, 4], count=counts,
    )  # fmt: skip
    for a, b in (
        (adjusted_effects(v, criteria=CRITERIA, pairs=[ARMS], covariates=MOTION)[0]
         for v in (votes, counted)),
        (measure_slopes(v, criteria=CRITERIA)[0] for v in (votes, counted)),
    ):  # fmt: skip
        for x, y in zip(a, b, strict=True):
            for field, value in x.as_row().items():
                other = y.as_row()[field]
                if isinstance(value, float):
                    assert other == pytest.approx(value, rel=1e-9, abs=1e-12), field
                else:
                    assert other == value, field


def test_simulated_confounded_studies_adjusted_recovers_the_truth_unadjusted_does_not():
    """150 studies (the benchmark runs 1,000 of each scenario: docs/statistics.md)."""
    s = SCENARIOS[0]
    rng = np.random.default_rng(11)
    outcomes = [analyse(simulate(s, rng), s, slopes=False) for _ in range(150)]
    assert all(o.adjusted is not None for o in outcomes)
    truth = s.true_effect
    adjusted = np.mean([o.adjusted for o in outcomes])
    unadjusted = np.mean([o.unadjusted for o in outcomes])
    assert abs(adjusted - truth) < 0.02, (adjusted, truth)
    assert unadjusted - truth > 0.15, (unadjusted, truth)  # the motion trap: the still arm "wins"
    covered = sum(o.lower <= truth <= o.upper for o in outcomes)  # type: ignore[operator]
    # nominal 95%: 150 draws cover between 134 and 148 times with probability > 0.99
    assert 134 <= covered <= 148, covered
    assert sum(o.unadjusted_lower <= truth <= o.unadjusted_upper for o in outcomes) < 15  # type: ignore[operator]


def test_without_a_confound_adjusting_changes_little():
    s = Scenario(motion_gap=0.0)
    rng = np.random.default_rng(13)
    outcomes = [analyse(simulate(s, rng), s, slopes=False) for _ in range(40)]
    gap = np.mean([abs(o.adjusted - o.unadjusted) for o in outcomes])  # type: ignore[operator]
    assert gap < 0.03


def test_what_cannot_be_fitted_says_why():
    clips, _ = ClipTable.from_mapping(
        {1: "a", 2: "b", 3: "a", 4: "b"}, {1: {"motion_mean": 1.0}, 2: {"motion_mean": 2.0}}
    )
    votes = MeasuredVotes.build(
        clips, criterion=["q"] * 4, prompt=[0, 0, 1, 1], left_clip=[0, 1, 2, 3],
        right_clip=[1, 0, 3, 2], choice=[0, 1, 2, 0],
    )  # fmt: skip
    summary = confound_summary(
        votes, arms=["a", "b"], criteria=["q"], pairs=[("a", "b")],
        covariate_sets=[("motion_mean", "motion_std")],
    )  # fmt: skip
    assert summary.measures == ("motion_mean",) and summary.n_clips == 2
    assert summary.adjusted == ()
    assert any("no clip has motion_std" in n for n in summary.notes)
    assert summary.slopes[0].slope is None and "decisive votes" in summary.notes[0]
    a = next(s for s in summary.spreads if s.arm == "a")
    assert (a.n_clips, a.median) == (1, 1.0)
    empty = confound_summary(
        MeasuredVotes.build(ClipTable.from_mapping({1: "a"}, {})[0], criterion=[], prompt=[],
                            left_clip=[], right_clip=[], choice=[]),
        arms=["a"], criteria=["q"], pairs=[], covariate_sets=[],
    )  # fmt: skip
    assert empty.reason and empty.adjusted == ()
    # too few prompts for the parameters, a constant column, a one-sided outcome
    y = np.array([0.0, 1.0] * 15)
    x = np.column_stack([np.ones(30), np.arange(30) % 3])
    assert "prompts" in str(cluster_logit(y, x, np.arange(30) % 3))
    assert "vary" in str(cluster_logit(y, np.column_stack([x, x[:, 1]]), np.arange(30)))
    assert "same way" in str(cluster_logit(np.ones(30), x, np.arange(30)))


# --- end to end ---------------------------------------------------------------------------------

FAVORED = "quokka-arm"
RATES = {"video_text_relevance": 0.6, "motion_naturalness": 0.5, "overall_quality": 0.65}


@pytest.fixture
def measured(session, settings):  # type: ignore[no-untyped-def]
    """12 prompts x 2 arms rated by 10 evaluators, every clip measured (the favored arm's
    clips move less)."""
    study = rating_study(session, settings, slug="measured", prompts=12, open_enrollment=True)
    cast_votes(session, settings, study, favored=FAVORED, rates=RATES, evaluators=10)
    rng = random.Random(0)
    arms = {arm.id: arm.name for arm in study.arms}
    for clip in study_clips(session, study):
        still = arms[clip.arm_id] == FAVORED
        for name, value in {
            "motion_mean": rng.gauss(1.0 if still else 2.0, 0.5),
            "motion_std": rng.gauss(0.5, 0.2),
            "flicker": rng.gauss(3.0, 1.0),
            "sharpness": rng.gauss(200.0, 40.0),
            "colourfulness": rng.gauss(40.0, 8.0),
        }.items():
            session.add(ClipMeasure(clip_id=clip.id, name=name, value=value, version="1",
                                    measured_at=clip.finished_at))  # fmt: skip
    session.commit()
    return study


def test_summary_json_dashboard_and_report_show_the_adjusted_effects(measured, session, client):
    filters = Filters(arm=FAVORED)
    d, a = dashboard_service.full(session=session, study=measured, filters=filters)
    session.rollback()
    doc = exports_service.summary_json(d, a)
    adjusted = doc["adjusted"]
    # 3 criteria x 1 opponent x 2 covariate sets (motion; every measure)
    assert len(adjusted) == 6, doc["adjusted_basis"]
    assert all(set(row) == ADJUSTED_KEYS for row in adjusted)
    motion = [r for r in adjusted if r["covariates"] == ["motion_mean", "motion_std"]]
    assert {r["criterion"] for r in motion} == set(RATES)
    for r in adjusted:
        assert r["arm"] == FAVORED and r["opponent"] == "zebra-arm"
        assert 0 < r["lower"] < r["effect"] < r["upper"] < 1
        assert 0 < r["unadjusted_effect"] < 1
    every = [r for r in adjusted if len(r["covariates"]) == 5]
    assert every and set(every[0]["covariates"]) == {
        "motion_mean", "motion_std", "flicker", "sharpness", "colourfulness"
    }  # fmt: skip
    json.dumps(doc, default=exports_service._json_default)
    tables = exports_service.summary_tables(d, a)
    assert len(tables["adjusted"]) == 6 and len(tables["measure_spread"]) == 10
    assert len(tables["measure_slope"]) == 15

    log_in(client)
    page = client.get(f"/admin/studies/{measured.slug}/dashboard/advanced?arm={FAVORED}")
    assert page.status_code == 200
    for text in (
        "Preference with the measures held equal",
        "Motion held equal",
        "Unadjusted",
        "Do votes follow the measures?",
        "motion_mean",
        "data-measure-spreads",
    ):
        assert text in page.text, text
    unadjusted = next(r for r in motion if r["criterion"] == "overall_quality")
    assert f"{100 * unadjusted['effect']:.1f}%" in page.text
    assert f"{100 * unadjusted['unadjusted_effect']:.1f}%" in page.text
    html = report.html(d, a)
    assert "Motion held equal" in html and f"{100 * unadjusted['effect']:.1f}%" in html


def test_report_command_prints_both_effects(measured, monkeypatch, settings):
    from typer.testing import CliRunner

    from app.cli import app
    from app.config import get_settings

    monkeypatch.setenv("VIDARENA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("VIDARENA_VAR_DIR", str(settings.var_dir))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["report", measured.slug, "--arm", FAVORED])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "with the clip measures held equal" in result.stdout
    for text in ("unadjusted", "motion held equal", "every measure held equal", "zebra-arm"):
        assert text in result.stdout, text


def test_no_evaluator_page_shows_a_measure(measured, client, settings):
    base = link(settings, measured)
    seen = client.get(base).text + json.dumps(join(client, base))
    for prompt in measured.prompts:  # a prompt may say "flickering": the study's own words
        seen = seen.replace(prompt.text, "")
    for name in ("motion_mean", "motion_std", "flicker", "sharpness", "colourfulness"):
        assert name not in seen


def test_summary_json_adjusted_is_empty_without_measures_and_says_why(session, settings, client):
    study = rating_study(session, settings, slug="unmeasured", prompts=6, open_enrollment=True)
    cast_votes(session, settings, study, favored=FAVORED, rates=RATES, evaluators=2)
    d, a = dashboard_service.full(session=session, study=study, filters=Filters())
    session.rollback()
    doc = exports_service.summary_json(d, a)
    assert doc["adjusted"] == []
    assert "measured" in doc["adjusted_basis"]["reason"]
    log_in(client)
    page = client.get(f"/admin/studies/{study.slug}/dashboard/advanced")
    assert "data-confounds-empty" in page.text and "No clip of this study is measured" in page.text
