"""The plan's anytime-valid verdicts where researchers read them, on SQLite and PostgreSQL:
summary.json (a top-level `verdicts` list with exactly the agreed keys) and summary.csv (table
`verdicts`) through the HTTP export routes, the live dashboard's panel, the HTML report beside
the plan, and `vidarena report`. Votes are cast through the real rating flow
(tests/kit/votes.py), so evaluators finish as they would."""

from __future__ import annotations

import csv
import io

import pytest

from app.dashboard import service as dashboard_service
from app.dashboard.schemas import Filters
from app.studies.models import StudyStatus
from tests.kit.admin import log_in
from tests.kit.studies import rating_study
from tests.kit.votes import cast_votes

KEYS = [
    "criterion", "arm", "opponent", "hypothesis", "margin", "status", "lower", "upper", "votes",
    "alpha",
]  # fmt: skip
# The first arm of the study (the focus: no render cost is recorded) is clearly preferred on
# relevance, and not at all on the two other criteria.
RATES = {"video_text_relevance": 0.97, "motion_naturalness": 0.5, "overall_quality": 0.5}
EVALUATORS = 24


@pytest.fixture
def voted(session, settings):  # type: ignore[no-untyped-def]
    study = rating_study(session, settings, slug="verdicts", prompts=6, open_enrollment=True)
    focus = study.arms[0].name
    cast = cast_votes(
        session, settings, study, favored=focus, rates=RATES, evaluators=EVALUATORS,
        tie_rate=0.1,
    )  # fmt: skip
    # one more evaluator, still rating: their votes wait until they finish
    cast_votes(
        session, settings, study, favored=focus, rates=RATES, evaluators=1, seed=9, max_trials=2
    )
    session.rollback()
    return study, cast


def by_criterion(verdicts: list[dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    return {v["criterion"]: v for v in verdicts}


def test_summary_json_carries_the_verdicts_with_exactly_the_agreed_keys(voted, client):
    study, cast = voted
    log_in(client)
    response = client.get(f"/admin/studies/{study.slug}/export/summary.json")
    assert response.status_code == 200
    summary = response.json()
    verdicts = summary["verdicts"]
    assert len(verdicts) == 3  # 3 criteria x 1 opponent
    assert all(list(v) == KEYS for v in verdicts)
    found = by_criterion(verdicts)
    focus, other = (a.name for a in study.arms)
    assert {(v["arm"], v["opponent"]) for v in verdicts} == {(focus, other)}
    relevance = found["video_text_relevance"]
    assert relevance["status"] == "superior" and relevance["hypothesis"] == "superiority"
    assert 0.5 < relevance["lower"] < relevance["upper"] <= 1
    assert relevance["alpha"] == pytest.approx(0.05 / 3) and relevance["margin"] == 0.0
    for key in ("motion_naturalness", "overall_quality"):
        assert found[key]["status"] == "undecided"
        assert found[key]["lower"] < 0.5 < found[key]["upper"]
    # every first showing of the finished evaluators, ties included; the one still rating waits
    finished = sum(cast.outcomes["video_text_relevance"].values())
    assert relevance["votes"] == finished == EVALUATORS * 6
    basis = summary["verdict_basis"]
    assert basis["evaluators_counted"] == EVALUATORS and basis["evaluators_waiting"] == 1
    assert basis["alpha"] == 0.05 and basis["hypotheses"] == 3 and basis["stop"] == "never"
    assert summary["tables"]["verdicts"] == verdicts


def test_summary_csv_has_the_verdicts_table(voted, client):
    study, _ = voted
    log_in(client)
    text = client.get(f"/admin/studies/{study.slug}/export/summary.csv").text
    rows = [r for r in csv.DictReader(io.StringIO(text[1:])) if r["table"] == "verdicts"]
    assert [r["criterion"] for r in rows] == [
        "video_text_relevance", "motion_naturalness", "overall_quality",
    ]  # fmt: skip
    assert rows[0]["status"] == "superior" and rows[1]["status"] == "undecided"
    assert {"lower", "upper", "votes", "alpha", "hypothesis", "margin"} <= set(rows[0])


def test_the_dashboard_shows_the_verdicts_panel_and_labels_the_fixed_sample_tables(voted, client):
    study, _ = voted
    log_in(client)
    for url in (
        f"/admin/studies/{study.slug}/dashboard",
        f"/admin/studies/{study.slug}/dashboard/live",
    ):
        html = client.get(url).text
        assert "Verdicts (valid at every look)" in html
        assert html.count('class="verdict verdict-') == 3
        assert 'class="verdict verdict-superior">better<' in html
        assert f"{EVALUATORS} evaluators counted" in html
        assert "1 still rating: their votes count when they finish" in html
        assert "fixed-sample (valid only at a pre-planned n)" in html
        assert 'read the <a href="#verdicts">verdicts</a> above instead' in html
    # the page's filters do not move the verdicts (the plan fixes the data rule)
    plain = client.get(f"/admin/studies/{study.slug}/dashboard/live").text
    filtered = client.get(
        f"/admin/studies/{study.slug}/dashboard/live?exclude_ties=1&exclude_flagged_trials=1"
    ).text
    assert section(plain) == section(filtered)


def section(html: str) -> str:
    start = html.index('id="verdicts"')
    return html[start : html.index("</section>", start)]


def test_the_report_shows_the_verdicts_beside_the_plan(voted, client):
    study, _ = voted
    log_in(client)
    html = client.get(f"/admin/studies/{study.slug}/export/report.html").text
    panel = section(html)
    assert "Verdicts (valid at every look)" in panel
    assert '<details id="plan-details" open>' in panel  # the plan, shown in the report
    assert "(family-wise)" in panel and "Locked" in panel
    assert "fixed-sample" in html


def test_verdicts_grow_as_evaluators_finish_and_count_everyone_once_the_study_closes(
    voted, session, settings
):
    study, _ = voted
    cache = dashboard_service.DashboardCache()
    first = dashboard_service.live(session=session, study=study, filters=Filters(), cache=cache)
    assert first.verdicts is not None
    assert (first.verdicts.summary.evaluators, first.verdicts.waiting) == (EVALUATORS, 1)
    focus = study.arms[0].name
    cast_votes(session, settings, study, favored=focus, rates=RATES, evaluators=2, seed=5)
    again = dashboard_service.live(session=session, study=study, filters=Filters(), cache=cache)
    assert again.verdicts is not None and again.verdicts.summary.evaluators == EVALUATORS + 2
    # the same as computed from scratch (the cache only added the two new evaluators)
    fresh = dashboard_service.live(
        session=session, study=study, filters=Filters(), cache=dashboard_service.DashboardCache()
    )
    assert fresh.verdicts is not None
    assert fresh.verdicts.summary == again.verdicts.summary
    study.status = StudyStatus.closed
    session.commit()
    closed = dashboard_service.live(session=session, study=study, filters=Filters(), cache=cache)
    assert closed.verdicts is not None and closed.verdicts.closed
    assert (closed.verdicts.summary.evaluators, closed.verdicts.waiting) == (EVALUATORS + 3, 0)


def test_vidarena_report_prints_the_verdicts_first(voted, settings, monkeypatch):
    from typer.testing import CliRunner

    from app.cli import app
    from app.config import get_settings

    study, _ = voted
    monkeypatch.setenv("VIDARENA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("VIDARENA_VAR_DIR", str(settings.var_dir))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["report", study.slug], env={"COLUMNS": "200"})
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    focus = study.arms[0].name
    assert f"verdicts for {focus} (valid at every look), {EVALUATORS} evaluators counted" in text
    assert text.index("(valid at every look)") < text.index("fixed-sample")
    relevance = text[text.index("Video-text relevance (primary)") :].split("Motion")[0]
    assert " superiority better " in relevance and "…" not in relevance
