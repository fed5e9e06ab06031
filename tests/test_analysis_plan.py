"""The analysis plan: the study file's [analysis] table, fixed before the data, locked when the
study opens, every later change kept with its time; the plan the sequential verdicts test."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy import select

from app.analysis.plan import Hypothesis, Plan
from app.db import make_engine, upgrade_schema
from app.rating import matchups
from app.studies import service as studies_service
from app.studies.analysis import analysis_toml
from app.studies.models import AnalysisChange, StudyStatus
from app.studies.studyfile import (
    AnalysisSpec,
    StudyFileError,
    load_study_file,
    parse_analysis,
    parse_study,
)
from tests.kit.admin import admin_token
from tests.kit.cli import run
from tests.kit.db import db
from tests.kit.paths import EXAMPLE_STUDY
from tests.kit.studies import SMALL_PROMPTS_CSV, SMALL_STUDY_TOML, small_study

TOML = SMALL_STUDY_TOML.format(slug="s")
LINE = TOML.count("\n") + 1  # the line of the first line added after TOML
CRITERIA = [
    "video_text_relevance",
    "appearance_distortion",
    "appearance_aesthetics",
    "motion_naturalness",
    "motion_amplitude",
    "overall_quality",
]


def draft(extra: str = ""):  # type: ignore[no-untyped-def]
    return parse_study(
        toml_text=TOML + extra,
        toml_name="study.toml",
        prompts_bytes=SMALL_PROMPTS_CSV.encode(),
        prompts_name="p.csv",
    )


def problems(extra: str) -> list[str]:
    with pytest.raises(StudyFileError) as info:
        draft(extra)
    return [str(p) for p in info.value.problems]


# --- the table ------------------------------------------------------------------------------


def test_without_an_analysis_table_every_criterion_is_a_primary_two_sided_superiority_test():
    d = draft()
    assert d.analysis == AnalysisSpec()
    plan = d.analysis.plan(criteria=CRITERIA, arms=["slow", "fast"], focus="fast")
    assert plan == Plan(
        alpha=0.05,
        hypotheses=tuple(
            Hypothesis(c, "fast", "slow", "superiority", 0.0, primary=True) for c in CRITERIA
        ),
        stop="never",
        budget=None,
        adaptive=False,
    )


def test_hypotheses_have_exactly_the_fields_the_statistics_read():
    names = [f.name for f in dataclasses.fields(Hypothesis)]
    assert names == ["criterion", "arm", "opponent", "hypothesis", "margin", "primary"]
    assert [f.name for f in dataclasses.fields(Plan)] == [
        "alpha",
        "hypotheses",
        "stop",
        "budget",
        "adaptive",
        "compare",
    ]


def test_a_full_table_becomes_one_hypothesis_per_criterion_and_opponent():
    spec = draft(
        """
[analysis]
alpha = 0.01
focus = "fast"
stop = "when_decided"
budget = 2000
primary = ["overall_quality", "motion_naturalness"]

[analysis.criteria.motion_amplitude]
hypothesis = "non_inferiority"
margin = 0.05
"""
    ).analysis
    plan = spec.plan(criteria=CRITERIA, arms=["slow", "fast"], focus="fast")
    assert (plan.alpha, plan.stop, plan.budget, plan.adaptive) == (
        0.01,
        "when_decided",
        2000,
        False,
    )
    by_criterion = {h.criterion: h for h in plan.hypotheses}
    assert list(by_criterion) == CRITERIA
    assert by_criterion["motion_amplitude"] == Hypothesis(
        "motion_amplitude", "fast", "slow", "non_inferiority", 0.05, primary=False
    )
    assert by_criterion["overall_quality"].primary
    assert [h.criterion for h in plan.primary] == ["motion_naturalness", "overall_quality"]


def test_three_arms_the_focus_against_each_other_and_a_shared_margin():
    spec = AnalysisSpec.model_validate(
        {
            "hypothesis": "non_inferiority",
            "margin": 0.1,
            "adaptive": True,
            "criteria": {
                "overall_quality": {"hypothesis": "superiority", "primary": True},
                "motion_amplitude": {"margin": 0.02},
            },
            "primary": ["overall_quality"],
        }
    )
    plan = spec.plan(criteria=CRITERIA, arms=["a", "b", "c"], focus="b")
    assert [(h.criterion, h.opponent) for h in plan.hypotheses[:2]] == [
        ("video_text_relevance", "a"),
        ("video_text_relevance", "c"),
    ]
    assert {h.arm for h in plan.hypotheses} == {"b"}
    margins = {h.criterion: (h.hypothesis, h.margin) for h in plan.hypotheses}
    assert margins["overall_quality"] == ("superiority", 0.0)
    assert margins["motion_amplitude"] == ("non_inferiority", 0.02)
    assert margins["appearance_aesthetics"] == ("non_inferiority", 0.1)
    assert plan.adaptive
    assert len(plan.hypotheses) == 12


def test_the_plan_focus_wins_and_a_different_resolved_focus_is_refused():
    spec = AnalysisSpec(focus="slow")
    with pytest.raises(ValueError, match="the plan's focus arm is 'slow', not 'fast'"):
        spec.plan(criteria=CRITERIA, arms=["slow", "fast"], focus="fast")
    with pytest.raises(ValueError, match="unknown focus arm 'nope'"):
        AnalysisSpec().plan(criteria=CRITERIA, arms=["slow", "fast"], focus="nope")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("alpha = 0.5", "{L}:9: analysis.alpha: Input should be less than 0.5"),
        ("alpha = 0", "{L}:9: analysis.alpha: Input should be greater than 0"),
        ('alpha = "0.05"', "{L}:9: analysis.alpha: Input should be a valid number"),
        ('stop = "sometimes"', "{L}:8: analysis.stop: Input should be 'when_decided' or 'never'"),
        ('stop = "when_decided"\nbudget = 0', "{L+1}:10: analysis.budget: Input should be greater"),
        ("budget = 10.5", "{L}:10: analysis.budget: Input should be a valid integer"),
        ('adaptive = "yes"', "{L}:12: analysis.adaptive: Input should be a valid boolean"),
        ("alhpa = 0.05", "{L}:1: analysis.alhpa: unknown field (check the spelling"),
        (
            'hypothesis = "non-inferiority"',
            "{L}:14: analysis.hypothesis: Input should be 'superiority' or 'non_inferiority'",
        ),
        (
            "margin = 0.05",
            '{L}:10: analysis.margin: a margin applies only to hypothesis = "non_inferiority"',
        ),
        (
            'hypothesis = "non_inferiority"',
            '{L}:14: analysis.hypothesis: hypothesis = "non_inferiority" needs a margin',
        ),
        (
            'hypothesis = "non_inferiority"\nmargin = 0.5',
            "{L+1}:10: analysis.margin: Input should be less than 0.5",
        ),
        ("budget = 100", '{L}:10: analysis.budget: a budget needs stop = "when_decided"'),
        (
            'focus = "nope"',
            "{L}:9: analysis.focus: unknown arm 'nope': use one of ['slow', 'fast']",
        ),
        ('focus = "Fast!"', "{L}:9: analysis.focus: 'Fast!' is not valid: use 1 to 63 lowercase"),
        ("adaptive = true", "{L}:12: analysis.adaptive: adaptive allocation needs three or more"),
        (
            'primary = ["overall_quality", "overal_quality"]',
            "{L}:31: analysis.primary.1: unknown criterion 'overal_quality': the study's criteria",
        ),
        (
            'primary = ["overall_quality", "overall_quality"]',
            "{L}:31: analysis.primary.1: 'overall_quality' is listed twice",
        ),
        ("primary = []", "{L}:11: analysis.primary: List should have at least 1 item"),
        (
            "\n[analysis.criteria.motion_amplitud]\nprimary = true",
            "{L+1}:20: analysis.criteria.motion_amplitud: unknown criterion 'motion_amplitud'",
        ),
        (
            'criteria.motion_amplitud.hypothesis = "superiority"',
            "{L}:10: analysis.criteria.motion_amplitud: unknown criterion 'motion_amplitud'",
        ),
        (
            "\n[analysis.criteria.motion_amplitude]\nmargin = 0.05",
            "{L+2}:10: analysis.criteria.motion_amplitude.margin: a margin applies only to",
        ),
        (
            '\n[analysis.criteria.motion_amplitude]\nhypothesis = "non_inferiority"',
            "{L+2}:14: analysis.criteria.motion_amplitude.hypothesis: "
            'hypothesis = "non_inferiority" needs a margin',
        ),
        (
            "\n[analysis.criteria.motion_amplitude]\ncolour = 1",
            "{L+2}:1: analysis.criteria.motion_amplitude.colour: unknown field",
        ),
        (
            'primary = ["overall_quality"]\n[analysis.criteria.motion_amplitude]\nprimary = true',
            "{L+2}:11: analysis.criteria.motion_amplitude.primary: primary = true, but "
            "'motion_amplitude' is not in the [analysis] primary list",
        ),
        (
            "\n[analysis.criteria.overall_quality]\nprimary = false\n"
            "[analysis.criteria.motion_amplitude]\nprimary = false\n"
            "[analysis.criteria.motion_naturalness]\nprimary = false\n"
            "[analysis.criteria.appearance_aesthetics]\nprimary = false\n"
            "[analysis.criteria.appearance_distortion]\nprimary = false\n"
            "[analysis.criteria.video_text_relevance]\nprimary = false\n",
            "{L-1}:1: analysis.primary: no criterion is primary: name at least one",
        ),
    ],
)
def test_a_bad_plan_is_refused_at_its_line_and_column(extra, expected):
    found = problems("\n[analysis]\n" + extra + "\n")
    line = LINE + 2  # the line after [analysis]
    for token, value in (("{L+2}", line + 2), ("{L+1}", line + 1)):
        expected = expected.replace(token, str(value))
    expected = expected.replace("{L-1}", str(line - 1)).replace("{L}", str(line))
    assert any(p.startswith(f"study.toml:{expected}") for p in found), (expected, found)


def test_every_problem_of_the_plan_is_reported_at_once():
    found = problems(
        """
[analysis]
focus = "nope"
primary = ["overal_quality"]

[analysis.criteria.motion_amplitud]
hypothesis = "superiority"
"""
    )
    assert [p.split(": ")[1] for p in found] == [
        "analysis.focus",
        "analysis.primary.0",
        "analysis.criteria.motion_amplitud",
    ]


def test_a_plan_built_directly_is_as_strict_as_the_file():
    with pytest.raises(ValidationError, match="a margin applies only"):
        AnalysisSpec(margin=0.05)
    with pytest.raises(ValidationError, match="needs a margin"):
        AnalysisSpec.model_validate({"criteria": {"x": {"hypothesis": "non_inferiority"}}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        AnalysisSpec.model_validate({"focus_arm": "fast"})


def test_the_founding_study_focuses_lightning_and_decides_on_overall_quality():
    d = load_study_file(EXAMPLE_STUDY)
    plan = d.analysis.plan(
        criteria=[c.key for c in d.criteria], arms=[a.name for a in d.arms], focus="lightning-4step"
    )
    assert [h.criterion for h in plan.primary] == ["overall_quality"]
    kinds = {h.criterion: (h.hypothesis, h.margin) for h in plan.hypotheses}
    assert kinds["motion_naturalness"] == kinds["motion_amplitude"] == ("non_inferiority", 0.05)
    assert kinds["overall_quality"] == ("superiority", 0.0)
    assert {h.opponent for h in plan.hypotheses} == {"animatediff"}


@pytest.mark.parametrize(
    "table",
    [
        {},
        {"alpha": 0.01, "focus": "fast", "stop": "when_decided", "budget": 500},
        {
            "hypothesis": "non_inferiority",
            "margin": 0.05,
            "primary": ["overall_quality"],
            "criteria": {"motion_amplitude": {"hypothesis": "superiority", "primary": False}},
        },
    ],
)
def test_the_plan_written_back_as_toml_reads_the_same(table):
    spec = AnalysisSpec.model_validate(table)
    text = analysis_toml(spec)
    assert text.startswith("[analysis]\n")
    again = parse_analysis(toml_text=text, toml_name="a", criteria=CRITERIA, arms=["slow", "fast"])
    assert again == spec


# --- stored, locked, changed ----------------------------------------------------------------


def test_the_plan_is_stored_and_locked_when_the_study_first_opens(session):
    study = small_study(session)
    assert study.analysis == studies_service.analysis_json(AnalysisSpec())
    assert study.analysis_locked_at is None
    # Before the lock a change is simply made.
    before_lock = studies_service.set_analysis(
        session=session, study=study, spec=AnalysisSpec(alpha=0.01)
    )
    assert before_lock is None and study.analysis["alpha"] == 0.01
    matchups.set_study_status(session=session, study=study, status=StudyStatus.rendering)
    assert study.analysis_locked_at is None
    matchups.set_study_status(session=session, study=study, status=StudyStatus.open)
    session.commit()
    locked = study.analysis_locked_at
    assert isinstance(locked, datetime)
    for status in (StudyStatus.closed, StudyStatus.open):
        matchups.set_study_status(session=session, study=study, status=status)
    assert study.analysis_locked_at == locked  # the first opening, not the latest
    assert session.scalars(select(AnalysisChange)).all() == []


def test_a_change_after_the_lock_is_kept_with_its_time_and_shown(session):
    study = small_study(session)
    studies_service.set_status(session=session, study=study, status=StudyStatus.open)
    new = AnalysisSpec(
        stop="when_decided",
        criteria={"motion_amplitude": {"hypothesis": "non_inferiority", "margin": 0.05}},
    )
    assert (
        studies_service.set_analysis(
            session=session, study=study, spec=AnalysisSpec(), reason="same"
        )
        is None
    )
    change = studies_service.set_analysis(
        session=session, study=study, spec=new, reason="motion is a secondary question"
    )
    session.commit()
    assert change is not None
    assert change.changed_at >= study.analysis_locked_at
    assert change.before == studies_service.analysis_json(AnalysisSpec())
    assert change.after == study.analysis == studies_service.analysis_json(new)
    view = studies_service.plan_view(session=session, study=study)
    assert view.locked_at == study.analysis_locked_at
    [shown] = view.changes
    assert shown.reason == "motion is a secondary question"
    assert shown.lines == [
        "criteria.motion_amplitude.hypothesis: none -> 'non_inferiority'",
        "criteria.motion_amplitude.margin: none -> 0.05",
        "stop: 'never' -> 'when_decided'",
    ]
    with pytest.raises(ValueError, match="unknown arm 'nope'"):
        studies_service.set_analysis(session=session, study=study, spec=AnalysisSpec(focus="nope"))


def test_analysis_plan_resolves_the_focus_the_plan_leaves_open(session):
    study = small_study(session)
    assert {h.arm for h in studies_service.analysis_plan(study, focus="fast").hypotheses} == {
        "fast"
    }
    assert studies_service.analysis_plan(study).hypotheses[0].arm == "slow"  # the first arm
    studies_service.set_analysis(session=session, study=study, spec=AnalysisSpec(focus="slow"))
    # The plan's own focus wins over the caller's (the fastest arm).
    plan = studies_service.analysis_plan(study, focus="fast")
    assert {(h.arm, h.opponent) for h in plan.hypotheses} == {("slow", "fast")}


def test_the_plan_of_a_new_study_is_the_one_in_its_file(session):
    d = load_study_file(EXAMPLE_STUDY)
    study = studies_service.create(session=session, draft=d)
    assert studies_service.analysis_spec(study) == d.analysis
    assert study.analysis["focus"] == "lightning-4step"


# --- the admin page -------------------------------------------------------------------------


def test_the_study_page_shows_the_plan_and_changes_it_after_the_lock(admin, session, engine):
    study = small_study(session)
    slug = study.slug
    page = admin.get(f"/admin/studies/{slug}").text
    assert "Analysis plan" in page
    assert "the fastest arm" in page and "superiority (two-sided)" in page
    assert "not yet" in page  # not locked
    token = admin_token(admin)
    admin.post(
        f"/admin/studies/{slug}/status",
        data={"status": "open", "csrf_token": token},
        follow_redirects=False,
    )
    table = (
        '[analysis]\nfocus = "fast"\nstop = "when_decided"\nbudget = 400\n'
        "[analysis.criteria.motion_amplitude]\n"
        'hypothesis = "non_inferiority"\nmargin = 0.05\n'
    )
    response = admin.post(
        f"/admin/studies/{slug}/analysis",
        data={"analysis": table, "reason": "pre-registered late", "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303
    page = admin.get(response.headers["location"]).text
    assert "Changed the analysis plan after its lock" in page
    assert "Changed after the lock (1)" in page and "pre-registered late" in page
    assert "budget: none -&gt; 400" in page
    assert "5 points" in page and "400 votes" in page
    with db(engine) as fresh:
        [change] = fresh.scalars(select(AnalysisChange)).all()
        assert change.after["focus"] == "fast"

    bad = admin.post(
        f"/admin/studies/{slug}/analysis",
        data={"analysis": '[analysis]\nfocus = "nope"\n', "csrf_token": token},
        follow_redirects=False,
    )
    assert bad.status_code == 422
    assert "analysis:2:9: analysis.focus: unknown arm &#39;nope&#39;" in bad.text
    assert "the plan was not changed" in bad.text
    with db(engine) as fresh:
        assert len(fresh.scalars(select(AnalysisChange)).all()) == 1


# --- the command line -----------------------------------------------------------------------


def test_study_plan_changes_the_plan_and_keeps_a_change_after_the_lock(
    database_url, engine, tmp_path
):
    assert run("study", "create", str(EXAMPLE_STUDY), database_url=database_url, cwd=tmp_path)
    slug = "lightning-vs-animatediff"
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text('[analysis]\nfocus = "animatediff"\nalpha = 0.01\n')
    first = run("study", "plan", slug, str(plan_file), database_url=database_url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "not locked yet" in first.stdout
    with db(engine) as session:
        study = studies_service.get_by_slug(session=session, slug=slug)
        studies_service.set_status(session=session, study=study, status=StudyStatus.open)
        session.commit()
    same = run("study", "plan", slug, str(plan_file), database_url=database_url, cwd=tmp_path)
    assert "unchanged" in same.stdout
    again = run(
        "study",
        "plan",
        slug,
        str(EXAMPLE_STUDY),
        "--reason",
        "back to the study file",
        database_url=database_url,
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    assert "after its lock" in again.stdout
    plan_file.write_text('[analysis]\nfocus = "nope"\n')
    bad = run("study", "plan", slug, str(plan_file), database_url=database_url, cwd=tmp_path)
    assert bad.returncode == 2
    assert "plan.toml:2:9: analysis.focus: unknown arm 'nope'" in bad.stderr
    assert "nothing was changed" in bad.stderr
    with db(engine) as session:
        [change] = session.scalars(select(AnalysisChange)).all()
        assert change.reason == "back to the study file"
        assert (
            change.before["focus"] == "animatediff" and change.after["focus"] == "lightning-4step"
        )


# --- the migration --------------------------------------------------------------------------


def test_migration_locks_the_default_plan_of_studies_already_open(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    upgrade_schema(url, "0007")
    engine = make_engine(url)
    with engine.begin() as conn:
        for slug, status in (("a", "draft"), ("b", "open"), ("c", "closed")):
            conn.execute(
                sa.text(
                    "INSERT INTO study (slug, name, description, status, criteria, rating, "
                    "study_file, created_at) VALUES (:slug, :slug, '', :status, '[]', '{}', '', "
                    "'2026-01-02 03:04:05.000000')"
                ),
                {"slug": slug, "status": status},
            )
    upgrade_schema(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT slug, analysis, analysis_locked_at FROM study ORDER BY slug")
        ).all()
    engine.dispose()
    assert [(r[0], r[1], r[2] is not None) for r in rows] == [
        ("a", "{}", False),
        ("b", "{}", True),
        ("c", "{}", True),
    ]
    assert str(rows[1][2]).startswith("2026-01-02 03:04:05")
