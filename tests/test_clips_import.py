"""`vidarena clips import`: GIFs rendered elsewhere, validated row by row, stored all or nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.analysis import speed_summary
from app.clips.importer import import_manifest
from app.clips.models import Clip, ClipStatus
from app.dashboard.service import clip_telemetry
from app.exports import service as exports_service
from app.rating import matchups
from app.rating import service as rating_service
from app.rating.models import Evaluator, Matchup
from app.storage import get_storage
from app.studies.models import StudyStatus
from app.studies.studyfile import StudyFileError
from tests.kit.clips import write_manifest
from tests.kit.media import encoded_gif_bytes
from tests.kit.rating import store_answer
from tests.kit.studies import small_study


def every_clip(study, folder, *, seed: int = 0) -> list[list[str]]:
    """Manifest rows for every prompt x arm of `study`, each with a distinct GIF in `folder`."""
    rows = []
    for i, (prompt, arm) in enumerate(
        [(p.text, a.name) for p in study.prompts for a in study.arms]
    ):
        (folder / f"{i}.gif").write_bytes(encoded_gif_bytes(seed + i))
        rows.append([prompt, arm, f"{i}.gif"])
    return rows


def test_import_validates_every_row_and_stores_nothing_when_one_is_bad(session, settings, tmp_path):
    study = small_study(session)
    (tmp_path / "ok.gif").write_bytes(encoded_gif_bytes(1))
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
    matchups.ensure_matchups(session=session, study=study)
    evaluator = Evaluator(study_id=study.id, public_id="replace-test")
    session.add(evaluator)
    session.commit()
    shown = rating_service.current_trial(session=session, study=study, evaluator=evaluator)
    store_answer(
        session,
        study,
        evaluator,
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


# --- render cost columns --------------------------------------------------------------------------

COST_HEADER = ("Prompt", "arm", "path", "total_s", "denoise_s", "denoiser_passes", "device",
               "peak_memory_bytes")  # fmt: skip


def test_cost_columns_are_stored_as_the_render_telemetry(session, settings, tmp_path):
    """Named as a rendered clip's telemetry, so the dashboard and clips.csv read them alike;
    blank cells are left out, and a manifest without the columns stores no cost."""
    study = small_study(session)
    costs = {"slow": ["12.5", "10", "50", "NVIDIA H100 80GB", "21474836480"],
             "fast": ["1.25", "", "4", "", ""]}  # fmt: skip
    rows = [[*row, *costs[row[1]]] for row in every_clip(study, tmp_path)]
    manifest = write_manifest(tmp_path, rows, header=COST_HEADER)
    import_manifest(session=session, study=study, manifest=manifest, storage=get_storage(settings))
    session.commit()
    by_arm = {c.arm.name: c.telemetry for c in session.scalars(select(Clip)).unique()}
    assert by_arm["slow"] == {
        "total_s": 12.5, "denoise_s": 10.0, "denoiser_passes": 50, "device": "NVIDIA H100 80GB",
        "peak_memory_bytes": 20 * 2**30, "imported_from": "manifest.csv",
        "imported_line": by_arm["slow"]["imported_line"],
    }  # fmt: skip
    assert by_arm["fast"]["total_s"] == 1.25 and by_arm["fast"]["denoiser_passes"] == 4
    assert not {"denoise_s", "device", "peak_memory_bytes"} & set(by_arm["fast"])
    columns = exports_service.clip_columns(session=session, study=study)
    exported = [
        dict(zip(columns, r, strict=True))
        for r in exports_service.clip_rows(session=session, study=study, columns=columns)
    ]
    assert {(r["arm"], r["telemetry_total_s"], r["telemetry_device"]) for r in exported} == {
        ("slow", 12.5, "NVIDIA H100 80GB"), ("fast", 1.25, None),
    }  # fmt: skip
    speed = {s.arm: s for s in speed_summary(clip_telemetry(session=session, study=study))}
    assert speed["slow"].median_total_seconds == 12.5 and speed["fast"].median_denoiser_passes == 4

    plain = small_study(session, slug="plain")
    import_manifest(
        session=session,
        study=plain,
        manifest=write_manifest(tmp_path, every_clip(plain, tmp_path, seed=50)),
        storage=get_storage(settings),
    )
    session.commit()
    assert all(s.median_total_seconds is None for s in speed_summary(
        clip_telemetry(session=session, study=plain)
    ))  # fmt: skip


def test_bad_cost_cells_are_refused_with_their_line_and_column(session, settings, tmp_path):
    study = small_study(session)
    rows = [[*row, "1.5", "", "4", "", ""] for row in every_clip(study, tmp_path)]
    fox = "a red fox running"
    rows[0] = [fox, "slow", "0.gif", "fast", "", "4", "", ""]
    rows[1] = [fox, "fast", "1.gif", "-2", "", "2.5", "", "16"]
    rows[2] = ["a city at night", "slow", "2.gif", "nan", "", "", "gpu\x07", ""]
    rows[3] = ["a city at night", "fast", "3.gif", "3", "4", "", "", "36000000000 "]
    manifest = write_manifest(tmp_path, rows, header=COST_HEADER)
    with pytest.raises(StudyFileError) as info:
        import_manifest(
            session=session, study=study, manifest=manifest, storage=get_storage(settings)
        )
    session.rollback()
    problems = [str(p) for p in info.value.problems]
    cost_column = len(f"{fox},slow,0.gif,") + 1
    assert problems[0].startswith(f"manifest.csv:2:{cost_column}: total_s 'fast': expected seconds")
    assert problems[1].startswith(f"manifest.csv:3:{cost_column}: total_s '-2'")
    assert problems[2].startswith(f"manifest.csv:3:{cost_column + 4}: denoiser_passes '2.5'")
    assert problems[3].startswith(f"manifest.csv:3:{cost_column + 9}: peak_memory_bytes '16'")
    assert "12 GiB as 12884901888" in problems[3]
    assert "manifest.csv:4:" in problems[4] and "total_s 'nan'" in problems[4]
    assert "manifest.csv:4:" in problems[5] and "device" in problems[5]
    assert "manifest.csv:5:" in problems[6] and "denoise_s is more than total_s" in problems[6]
    assert len(problems) == 7, problems
    assert {c.status for c in session.scalars(select(Clip))} == {ClipStatus.pending}


def test_unknown_or_repeated_manifest_columns_are_refused(session, settings, tmp_path):
    study = small_study(session)
    header = ("prompt", "arm", "path", "render_seconds", "total_s", "TOTAL_S")
    manifest = write_manifest(tmp_path, [], header=header)
    with pytest.raises(StudyFileError) as info:
        import_manifest(
            session=session, study=study, manifest=manifest, storage=get_storage(settings)
        )
    problems = [str(p) for p in info.value.problems]
    assert problems[0].startswith("manifest.csv:1:17: unknown column 'render_seconds'")
    assert (
        "optionally total_s, denoise_s, denoiser_passes, device, peak_memory_bytes" in (problems[0])
    )
    assert problems[1] == "manifest.csv:1:40: duplicate column 'total_s'"
    missing = write_manifest(tmp_path, [], header=("prompt", "path"))
    with pytest.raises(StudyFileError, match=r"manifest\.csv:1:1: missing column 'arm'"):
        import_manifest(
            session=session, study=study, manifest=missing, storage=get_storage(settings)
        )
