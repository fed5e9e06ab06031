"""`vidarena clips import`: GIFs rendered elsewhere, validated row by row, stored all or nothing."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from app.clips.importer import import_manifest
from app.clips.models import Clip, ClipStatus
from app.storage import get_storage
from app.studies.studyfile import StudyFileError
from tests.factories import small_study
from workers.gif import encode_gif


def gif_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    frames = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]
    return encode_gif(frames, fps=8)


def write_manifest(folder, rows):
    path = folder / "manifest.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["prompt", "arm", "path"])
        writer.writerows(rows)
    return path


def test_import_validates_every_row_and_stores_nothing_when_one_is_bad(session, settings, tmp_path):
    study = small_study(session)
    (tmp_path / "ok.gif").write_bytes(gif_bytes(1))
    (tmp_path / "fake.gif").write_bytes(b"\x89PNG\r\n\x1a\nnot a gif")
    manifest = write_manifest(
        tmp_path,
        [
            ["a red fox running", "slow", "ok.gif"],
            ["a red fox running", "fast", "fake.gif"],
            ["a blue whale", "slow", "ok.gif"],
            ["a city at night", "medium", "ok.gif"],
            ["a city at night", "slow", "missing.gif"],
        ],
    )
    with pytest.raises(StudyFileError) as info:
        import_manifest(
            session=session, study=study, manifest=manifest, storage=get_storage(settings)
        )
    text = str(info.value)
    assert "manifest.csv:3:1: fake.gif: not a GIF" in text
    assert "manifest.csv:4:1: prompt 'a blue whale' is not in this study" in text
    assert "manifest.csv:5:1: arm 'medium' is not in this study" in text
    assert "manifest.csv:6:1: file 'missing.gif' not found" in text
    session.rollback()
    statuses = {c.status for c in session.scalars(select(Clip))}
    assert statuses == {ClipStatus.pending}


def test_import_marks_clips_done_with_their_media(session, settings, tmp_path):
    study = small_study(session)
    rows = []
    for i, (prompt, arm) in enumerate(
        [(p.text, a.name) for p in study.prompts for a in study.arms]
    ):
        (tmp_path / f"{i}.gif").write_bytes(gif_bytes(i))
        rows.append([prompt, arm, f"{i}.gif"])
    manifest = write_manifest(tmp_path, rows)
    storage = get_storage(settings)
    assert import_manifest(session=session, study=study, manifest=manifest, storage=storage) == 4
    session.commit()
    for clip in session.scalars(select(Clip)):
        assert clip.status == ClipStatus.done and clip.source == "import"
        assert (clip.num_frames, clip.width, clip.height, clip.duration_ms) == (4, 32, 32, 500)
        assert storage.read(clip.storage_key)[:6] == b"GIF89a"
    with pytest.raises(StudyFileError, match="already done"):
        import_manifest(session=session, study=study, manifest=manifest, storage=storage)
