"""The report: `vidarena report SLUG` prints the per-criterion table; `--html FILE` (and the
dashboard's download) is one self-contained HTML file with the charts."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from app.config import get_settings
from app.exports import report
from tests.kit.admin import log_in
from tests.kit.studies import rating_study
from tests.kit.votes import cast_votes

FAVORED = "quokka-arm"
RATES = {"video_text_relevance": 0.8, "motion_naturalness": 0.5, "overall_quality": 0.35}


@pytest.fixture
def study(session, settings):  # type: ignore[no-untyped-def]
    study = rating_study(session, settings, slug="reported", prompts=6, open_enrollment=True)
    cast_votes(session, settings, study, favored=FAVORED, rates=RATES, evaluators=4)
    session.rollback()
    return study


def assert_self_contained(html: str) -> None:
    assert html.startswith("<!doctype html>") and "<style>" in html
    assert "<script" not in html.lower()
    assert not re.search(r'(src|href)="(/|https?:)', html), "links back to a server"
    assert "<svg" in html and "dv-track" in html and "tl-svg" in html
    assert "&#34;" not in html.split("</style>")[0]  # CSS is not HTML-escaped


def test_report_command_prints_the_table_and_writes_html(study, monkeypatch, settings, tmp_path):
    from app.cli import app

    monkeypatch.setenv("VIDARENA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("VIDARENA_VAR_DIR", str(settings.var_dir))
    get_settings.cache_clear()
    target = tmp_path / "report.html"
    try:
        result = CliRunner().invoke(
            app, ["report", study.slug, "--html", str(target), "--arm", FAVORED, "--margin", "5"]
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    for label in ("Video-text relevance", "Motion naturalness", "Overall quality"):
        assert label in result.stdout
    assert "quokka-arm vs zebra-arm" in result.stdout and "no worse by 5 pp" in result.stdout
    html = target.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert "Rating test reported" in html and "Krippendorff" in html


def test_report_download_is_self_contained_and_cannot_run_script(study, client):
    log_in(client)
    response = client.get(f"/admin/studies/{study.slug}/export/report.html")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == report.REPORT_CSP
    assert "attachment" in response.headers["content-disposition"]
    assert_self_contained(response.text)
