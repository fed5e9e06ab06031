"""Clips that arrive through `vidarena clips import` (app.clips.importer): manifests, and studies
whose clips are imported with or without the manifest's cost columns, then rated through the
real rating flow."""

from __future__ import annotations

import csv
from pathlib import Path

from sqlalchemy.orm import Session

from app.clips.importer import import_manifest
from app.config import Settings
from app.rating import matchups
from app.storage import get_storage
from app.studies.models import Study
from tests.kit.media import gif_bytes
from tests.kit.studies import rating_study
from tests.kit.votes import cast_votes

COST_COLUMNS = ["total_s", "denoiser_passes", "device", "peak_memory_bytes"]
RATES = {"video_text_relevance": 0.7, "motion_naturalness": 0.55, "overall_quality": 0.35}


def write_manifest(folder, rows, header=("prompt", "arm", "path")):  # type: ignore[no-untyped-def]
    """`FOLDER/manifest.csv` with `header` and `rows`; its path."""
    path = folder / "manifest.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def imported_study(
    session: Session,
    settings: Settings,
    folder: Path,
    *,
    slug: str,
    seconds: dict[str, float | None],
    prompts: int = 6,
    evaluators: int = 4,
) -> Study:
    """A study of len(seconds) arms whose clips are imported, each arm's rows carrying
    `seconds[arm]` render seconds (with passes, device and memory) or blank cost cells when
    None; then `evaluators` evaluators rate every pair."""
    study = rating_study(
        session, settings, slug=slug, prompts=prompts, arms=len(seconds), done=False,
        open_enrollment=True,
    )  # fmt: skip
    assert [a.name for a in study.arms] == list(seconds), "seconds are given in arm order"
    manifest = folder / f"{slug}.csv"
    with manifest.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["prompt", "arm", "path", *COST_COLUMNS])
        for i, (prompt, arm) in enumerate((p, a) for p in study.prompts for a in study.arms):
            (folder / f"{slug}-{i}.gif").write_bytes(gif_bytes(i))
            total = seconds[arm.name]
            cost = ["", "", "", ""]
            if total is not None:
                cost = [f"{total * (1 + i % 3 / 10):.3f}", str(arm.position * 8 + 4), "NVIDIA H100",
                        str(int(total * 2**30))]  # fmt: skip
            writer.writerow([prompt.text, arm.name, f"{slug}-{i}.gif", *cost])
    import_manifest(session=session, study=study, manifest=manifest, storage=get_storage(settings))
    matchups.ensure_matchups(session=session, study=study)
    session.commit()
    favored = study.arms[1].name
    cast_votes(session, settings, study, favored=favored, rates=RATES, evaluators=evaluators)
    session.rollback()
    return study
