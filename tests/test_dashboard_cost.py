"""Render cost of imported clips on the dashboard, in report.html, `vidarena report` and
summary.json: an arm whose clips came without cost columns is named as such, and "the fastest
arm" is named only when every arm has a cost (it used to be the fastest of those with one)."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from app.config import get_settings
from tests.kit.admin import log_in
from tests.kit.clips import imported_study

NO_COST = "No render cost recorded for arm zebra-arm"


def pages(client, slug: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    log_in(client)
    return {
        "dashboard": client.get(f"/admin/studies/{slug}/dashboard").text,
        "report": client.get(f"/admin/studies/{slug}/export/report.html").text,
    }


def terminal_report(slug: str, settings, monkeypatch) -> str:  # type: ignore[no-untyped-def]
    from app.cli import app

    monkeypatch.setenv("VIDARENA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("VIDARENA_VAR_DIR", str(settings.var_dir))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["report", slug], env={"COLUMNS": "200"})
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return " ".join(result.stdout.split())


def test_an_arm_without_render_cost_is_named_instead_of_guessing(
    session, settings, tmp_path, client, monkeypatch
):
    study = imported_study(
        session, settings, tmp_path, slug="partial", prompts=4, evaluators=2,
        seconds={"zebra-arm": None, "quokka-arm": 9.0, "narwhal-arm": 2.0},
    )  # fmt: skip
    for name, html in pages(client, study.slug).items():
        assert f"{NO_COST}: its 4 done clip(s) carry no total_s" in html, name
        assert (
            "Focus arm: zebra-arm, the first of the study: no render cost recorded for arm "
            "zebra-arm, so no arm is named the fastest." in html
        ), name
        assert "Fastest arm" not in html and "the fastest (" not in html, name
        # The two arms with a cost are still placed on the speed chart, each in its colour.
        assert re.findall(r'class="sp-point (arm-c\d)', html) == ["arm-c1", "arm-c2"], name
    summary = client.get(f"/admin/studies/{study.slug}/export/summary.json").json()
    assert summary["focus_arm"] == "zebra-arm" and summary["fastest_arm"] is None
    assert summary["arms_without_render_cost"] == ["zebra-arm"]
    speed = {r["arm"]: r for r in summary["tables"]["speed"]}
    assert speed["zebra-arm"]["speed_median_total_seconds"] is None
    assert speed["narwhal-arm"]["speed_median_total_seconds"] > 0
    printed = terminal_report(study.slug, settings, monkeypatch)
    assert "no render cost recorded for arm zebra-arm" in printed
    assert "zebra-arm vs quokka-arm" in printed  # read as the first arm's win rates


def test_with_every_cost_imported_the_fastest_arm_is_named_and_charted(
    session, settings, tmp_path, client, monkeypatch
):
    study = imported_study(
        session, settings, tmp_path, slug="priced", prompts=4, evaluators=2,
        seconds={"zebra-arm": 21.0, "quokka-arm": 9.0, "narwhal-arm": 2.0},
    )  # fmt: skip
    for name, html in pages(client, study.slug).items():
        assert "Fastest arm: <strong>narwhal-arm</strong>" in html, name
        assert "Focus arm: narwhal-arm, the fastest (lowest median render seconds" in html, name
        assert "No render cost recorded" not in html, name
        colours = re.findall(r'class="sp-point (arm-c\d)', html)
        assert sorted(colours) == ["arm-c0", "arm-c1", "arm-c2"], name
    summary = client.get(f"/admin/studies/{study.slug}/export/summary.json").json()
    assert summary["fastest_arm"] == summary["focus_arm"] == "narwhal-arm"
    assert summary["arms_without_render_cost"] == []
    printed = terminal_report(study.slug, settings, monkeypatch)
    assert "Focus arm: narwhal-arm, the fastest" in printed
