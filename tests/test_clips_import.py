"""`vidarena clips import`: GIFs rendered elsewhere, validated row by row, stored all or nothing."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from app.clips.importer import import_manifest
from app.clips.models import Clip, ClipStatus
from app.rating import service as rating_service
from app.rating.models import Evaluator, Matchup
from app.storage import get_storage
from app.studies.models import StudyStatus
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


def every_clip(study, folder, *, seed: int = 0) -> list[list[str]]:
    """Manifest rows for every prompt x arm of `study`, each with a distinct GIF in `folder`."""
    rows = []
    for i, (prompt, arm) in enumerate(
        [(p.text, a.name) for p in study.prompts for a in study.arms]
    ):
        (folder / f"{i}.gif").write_bytes(gif_bytes(seed + i))
        rows.append([prompt, arm, f"{i}.gif"])
    return rows


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
    manifest = write_manifest(tmp_path, every_clip(study, tmp_path))
    storage = get_storage(settings)
    assert import_manifest(session=session, study=study, manifest=manifest, storage=storage) == 4
    session.commit()
    for clip in session.scalars(select(Clip)):
        assert clip.status == ClipStatus.done and clip.source == "import"
        assert (clip.num_frames, clip.width, clip.height, clip.duration_ms) == (4, 32, 32, 500)
        assert storage.read(clip.storage_key)[:6] == b"GIF89a"
    with pytest.raises(StudyFileError, match="already done"):
        import_manifest(session=session, study=study, manifest=manifest, storage=storage)


def test_replace_refuses_clips_evaluators_were_given(session, settings, tmp_path):
    """A clip in a trial is what its votes judged: --replace may redo the others, not it."""
    study = small_study(session)
    rows = every_clip(study, tmp_path)
    storage = get_storage(settings)
    import_manifest(
        session=session, study=study, manifest=write_manifest(tmp_path, rows), storage=storage
    )
    study.status = StudyStatus.open
    rating_service.ensure_matchups(session=session, study=study)
    evaluator = Evaluator(study_id=study.id, public_id="replace-test")
    session.add(evaluator)
    session.commit()
    shown = rating_service.current_trial(session=session, study=study, evaluator=evaluator)
    rating_service.submit_votes(
        session=session,
        study=study,
        evaluator=evaluator,
        trial_id=shown.trial.id,
        votes={c: "left" for c in study.criterion_keys},
    )
    session.commit()
    matchup = session.get(Matchup, shown.trial.matchup_id)
    given = {matchup.clip_a_id, matchup.clip_b_id}
    by_row = {(c.prompt.text, c.arm.name): c for c in session.scalars(select(Clip)).unique().all()}
    keys_before = {c.id: c.storage_key for c in by_row.values()}
    rows = every_clip(study, tmp_path, seed=100)  # new renders of every clip, same rows
    manifest = write_manifest(tmp_path, rows)
    with pytest.raises(StudyFileError) as info:
        import_manifest(
            session=session, study=study, manifest=manifest, storage=storage, replace=True
        )
    session.rollback()
    refused = [line for line in str(info.value).splitlines() if "cannot be replaced" in line]
    assert len(refused) == 2, str(info.value)
    assert all("in 1 trial(s), 1 answered" in line for line in refused)
    assert {c.id: c.storage_key for c in session.scalars(select(Clip))} == keys_before

    # Without the rows of the clips that were given, the others are replaced.
    others = [r for r in rows if by_row[(r[0], r[1])].id not in given]
    count = import_manifest(
        session=session,
        study=study,
        manifest=write_manifest(tmp_path, others),
        storage=storage,
        replace=True,
    )
    session.commit()
    assert count == len(others) == 2
    after = {c.id: c.storage_key for c in session.scalars(select(Clip))}
    assert all(after[c] == keys_before[c] for c in given)
    assert all(after[c] != keys_before[c] for c in after if c not in given)
