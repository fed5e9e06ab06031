"""Per-clip measures where clips come from: the render worker measures what it rendered, the
importer what it imported, `vidarena clips measure SLUG` backfills a study; clips.csv exports
them (`measure_<name>` columns and `measure_versions`)."""

from __future__ import annotations

import csv
import io

import cv2
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select, update
from typer.testing import CliRunner

from app.clips import service as clips_service
from app.clips.dispatch import send_renders
from app.clips.gif import encode_gif
from app.clips.importer import import_manifest
from app.clips.measures import NAMES, VERSIONS, Measured, measure_gif
from app.clips.models import Clip, ClipMeasure, ClipStatus
from app.config import get_settings
from app.db import session_factory
from app.exports import service as exports_service
from app.storage import get_storage
from tests.kit.clips import write_manifest
from tests.kit.studies import rating_study, small_study, study_clips
from tests.kit.workers import running_worker, wait_until

CSV_COLUMNS = [f"measure_{name}" for name in NAMES] + ["measure_versions"]
EXPECTED_VERSIONS = ";".join(f"{name}={version}" for name, version in VERSIONS.items())


def moving_gif(pixels_per_frame: int, *, seed: int, frames: int = 8, size: int = 96) -> bytes:
    """Smooth colour noise sliding right by `pixels_per_frame` each frame (a known motion)."""
    rng = np.random.default_rng(seed)
    width = size + pixels_per_frame * frames + 8
    noise = (rng.random((size + 8, width, 3)) * 255).astype(np.uint8)
    image = cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 2.5), None, 0, 255, cv2.NORM_MINMAX)
    shots = [
        Image.fromarray(image[4 : 4 + size, 4 + pixels_per_frame * t :][:, :size])
        for t in range(frames)
    ]
    return encode_gif(shots, fps=8, dither=0.0)


def stored(session, clip_ids) -> dict[int, dict[str, Measured]]:
    rows = session.execute(
        select(ClipMeasure.clip_id, ClipMeasure.name, ClipMeasure.value, ClipMeasure.version)
        .where(ClipMeasure.clip_id.in_(list(clip_ids)))
        .order_by(ClipMeasure.id)
    ).all()
    session.rollback()
    out: dict[int, dict[str, Measured]] = {}
    for clip_id, name, value, version in rows:
        out.setdefault(clip_id, {})[name] = Measured(value, version)
    return out


def clips_csv(session, study) -> list[dict[str, str]]:
    text = "".join(
        exports_service.export_chunks(session=session, study=study, kind="clips", bom=False)
    )
    session.rollback()
    return list(csv.DictReader(io.StringIO(text, newline="")))


def assert_same(got: dict[str, Measured], expected: dict[str, Measured]) -> None:
    assert set(got) == set(expected)
    for name, measured in expected.items():
        assert got[name].version == measured.version
        assert got[name].value == pytest.approx(measured.value, rel=1e-6, abs=1e-9)


# --- the importer -----------------------------------------------------------------------------


def test_imported_clips_are_measured_and_exported(session, settings, tmp_path):
    study = small_study(session)
    rows, motion = [], {}
    for i, (prompt, arm) in enumerate((p, a) for p in study.prompts for a in study.arms):
        motion[(prompt.id, arm.id)] = 2 * i  # 0, 2, 4, 6 pixels per frame
        (tmp_path / f"{i}.gif").write_bytes(moving_gif(2 * i, seed=i))
        rows.append([prompt.text, arm.name, f"{i}.gif"])
    manifest = write_manifest(tmp_path, rows)
    storage = get_storage(settings)
    import_manifest(session=session, study=study, manifest=manifest, storage=storage)
    session.commit()
    clips = study_clips(session, study)
    measured = stored(session, (c.id for c in clips))
    assert set(measured) == {c.id for c in clips}
    for clip in clips:
        assert {n: m.version for n, m in measured[clip.id].items()} == VERSIONS
        truth = motion[(clip.prompt_id, clip.arm_id)]
        assert measured[clip.id]["motion_mean"].value == pytest.approx(truth, abs=0.1)
        # Measured from the bytes stored, as a backfill would measure them.
        assert_same(measured[clip.id], measure_gif(storage.read(clip.storage_key)))
    # measures_for_study reads them back; clips.csv exports them.
    by_clip = clips_service.measures_for_study(session=session, study_id=study.id)
    assert set(by_clip) == {c.id for c in clips}
    table = clips_csv(session, study)
    assert all(column in table[0] for column in CSV_COLUMNS)
    for row in table:
        clip_id = int(row["clip_id"])
        assert row["source"] == "import"
        assert float(row["measure_motion_mean"]) == pytest.approx(
            by_clip[clip_id]["motion_mean"], rel=1e-9
        )
        assert float(row["measure_sharpness"]) > 0
        assert row["measure_versions"] == EXPECTED_VERSIONS


def test_a_study_without_measures_exports_no_measure_columns(session, settings):
    study = rating_study(session, settings, slug="unmeasured", prompts=1)
    assert not [c for c in clips_csv(session, study)[0] if c.startswith("measure_")]


# --- the CLI backfill -------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, settings):  # type: ignore[no-untyped-def]
    """`vidarena ARGS...` in this process, configured like a user's shell for this test's
    database and storage; returns the result (stdout and stderr apart)."""
    from app.cli import app

    monkeypatch.setenv("VIDARENA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("VIDARENA_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("VIDARENA_STORAGE_URL", settings.storage_url)
    get_settings.cache_clear()
    runner = CliRunner()
    yield lambda *args: runner.invoke(app, list(args))
    get_settings.cache_clear()


def test_clips_measure_backfills_a_study(session, settings, cli):
    study = rating_study(session, settings, slug="backfill", prompts=3)
    other = rating_study(session, settings, slug="untouched", prompts=1)
    clips = study_clips(session, study)
    first, pending = clips[0].id, clips[-1].id
    session.execute(update(Clip).where(Clip.id == pending).values(status=ClipStatus.failed))
    # One clip already measured, one measure of another at an older version.
    storage = get_storage(settings)
    current = measure_gif(storage.read(clips[1].storage_key), num_frames=4)
    clips_service.record_measures(session=session, clip_id=clips[1].id, measures=current)
    clips_service.record_measures(
        session=session, clip_id=first, measures={"flicker": Measured(123.0, "0")}
    )
    session.commit()

    result = cli("clips", "measure", "backfill")
    assert result.exit_code == 0, result.output
    assert "measured 4 clips of 4 to measure in 'backfill'" in result.stdout
    assert "measured 4/4" in result.stderr
    measured = stored(session, (c.id for c in clips))
    assert set(measured) == {c.id for c in clips if c.id != pending}
    for clip_id, by_name in measured.items():
        key = next(c.storage_key for c in clips if c.id == clip_id)
        assert_same(by_name, measure_gif(storage.read(key), num_frames=4))
    assert measured[first]["flicker"].version == VERSIONS["flicker"]  # the old one redone
    assert stored(session, (c.id for c in study_clips(session, other))) == {}

    again = cli("clips", "measure", "backfill")
    assert again.exit_code == 0 and "measured 0 clips of 0" in again.stdout
    forced = cli("clips", "measure", "backfill", "--force")
    assert forced.exit_code == 0 and "measured 5 clips of 5" in forced.stdout

    missing = cli("clips", "measure", "no-such-study")
    assert missing.exit_code == 2 and "no study with slug 'no-such-study'" in missing.stderr


def test_clips_measure_names_the_clips_it_could_not_read(session, settings, cli):
    study = rating_study(session, settings, slug="lost", prompts=1)
    lost = study_clips(session, study)[0]
    get_storage(settings).delete(lost.storage_key)
    session.rollback()
    result = cli("clips", "measure", "lost")
    assert result.exit_code == 1
    assert f"clip {lost.id}: " in result.stderr and "1 clip could not be measured" in result.stderr
    assert "measured 1 clip of 2" in result.stdout


# --- the render worker ------------------------------------------------------------------------


@pytest.mark.slow
def test_the_render_worker_measures_what_it_rendered(session, render_settings, tmp_path):
    study = small_study(session)
    ids = clips_service.queue_missing(session=session, study=study, tiny=True)
    session.commit()
    session.close()
    send_renders(settings=render_settings, clips=[(i, True) for i in ids])
    log = tmp_path / "worker.log"
    reader = session_factory(session.get_bind(), read_only=True)

    def all_done() -> bool:
        with reader() as fresh:
            statuses = fresh.scalars(select(Clip.status).where(Clip.id.in_(ids))).all()
            return all(s == ClipStatus.done for s in statuses)

    with running_worker(render_settings, log):
        wait_until(all_done, timeout=240, what="every clip done", log=log)
    storage = get_storage(render_settings)
    measured = stored(session, ids)
    assert set(measured) == set(ids)
    clips = {c.id: c for c in study_clips(session, study)}
    for clip_id in ids:
        clip = clips[clip_id]
        expected = measure_gif(storage.read(clip.storage_key), num_frames=clip.num_frames)
        assert_same(measured[clip_id], expected)
        assert measured[clip_id]["sharpness"].value > 0
    table = clips_csv(session, study)
    assert len(table) == 4
    for row in table:
        assert row["source"] == "render"
        assert row["measure_versions"] == EXPECTED_VERSIONS
        assert all(row[column] != "" for column in CSV_COLUMNS)
