"""Bring your own clips: a manifest CSV (prompt, arm, path) of GIFs rendered elsewhere.

Imported GIFs are stored without comments or application data other than the loop count, so a
tool name inside a file cannot tell raters which pipeline made it.

Every row is checked before anything is stored, and every bad row is reported at once; the clips
are written in one transaction, so a bad manifest changes nothing. `replace` re-imports done
clips, but never one that evaluators have been given in a trial: its votes judged the old bytes.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.clips.models import Clip, ClipStatus
from app.db import utcnow
from app.rating.models import Matchup, Trial
from app.storage import Storage
from app.studies.models import Arm, Prompt, Study
from app.studies.studyfile import Problem, StudyFileError

MANIFEST_COLUMNS = ("prompt", "arm", "path")
MAX_GIF_BYTES = 64 * 1024 * 1024


@dataclass
class ImportRow:
    line: int
    clip: Clip
    data: bytes
    info: dict


def import_manifest(
    *, session: Session, study: Study, manifest: Path, storage: Storage, replace: bool = False
) -> int:
    """Validate every row, then store the GIFs and mark their clips done; returns the count."""
    rows = _validate(session=session, study=study, manifest=manifest, replace=replace)
    now = utcnow()
    for row in rows:
        stored = storage.put(row.data, suffix=".gif")
        clip = row.clip
        clip.status = ClipStatus.done
        clip.source = "import"
        clip.tiny = False
        clip.storage_key, clip.sha256, clip.size_bytes = stored.key, stored.sha256, stored.size
        clip.num_frames, clip.width, clip.height = (
            row.info["frames"],
            row.info["width"],
            row.info["height"],
        )
        clip.duration_ms = row.info["duration_ms"]
        clip.telemetry = {"imported_from": str(manifest.name), "imported_line": row.line}
        clip.error, clip.finished_at, clip.lease_expires_at = None, now, None
    session.flush()
    return len(rows)


def _validate(*, session: Session, study: Study, manifest: Path, replace: bool) -> list[ImportRow]:
    from workers.gif import gif_info, strip_metadata

    name = manifest.name
    try:
        text = manifest.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyFileError([Problem(name, 1, 1, f"cannot read the manifest: {exc}")]) from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    if sorted(header) != sorted(MANIFEST_COLUMNS):
        raise StudyFileError(
            [Problem(name, 1, 1, f"header must be {','.join(MANIFEST_COLUMNS)}, got {header}")]
        )
    prompts = {p.text: p for p in study.prompts}
    arms = {a.name: a for a in study.arms}
    clips = {
        (c.prompt_id, c.arm_id): c
        for c in session.scalars(
            select(Clip)
            .join(Prompt, Prompt.id == Clip.prompt_id)
            .where(Prompt.study_id == study.id)
        )
    }
    in_trials = _clips_in_trials(session, study) if replace else {}
    problems: list[Problem] = []
    rows: list[ImportRow] = []
    seen: dict[int, int] = {}
    for record in reader:
        line = reader.line_num
        record = {k.strip().lower(): (v or "").strip() for k, v in record.items() if k}
        prompt = prompts.get(" ".join(record["prompt"].split()))
        arm: Arm | None = arms.get(record["arm"])
        path = (manifest.parent / record["path"]).resolve()
        found = _row_problem(record, prompt, arm, path, arms)
        if found:
            problems.append(Problem(name, line, 1, found))
            continue
        clip = clips[(prompt.id, arm.id)]  # type: ignore[union-attr]
        if clip.id in seen:
            problems.append(Problem(name, line, 1, f"same prompt and arm as line {seen[clip.id]}"))
            continue
        seen[clip.id] = line
        if clip.status == ClipStatus.done and not replace:
            problems.append(Problem(name, line, 1, "this clip is already done (use --replace)"))
            continue
        if clip.id in in_trials:
            trials, answered = in_trials[clip.id]
            problems.append(
                Problem(
                    name,
                    line,
                    1,
                    f"this clip cannot be replaced: evaluators were given it in {trials} trial(s), "
                    f"{answered} answered, and those votes judged the stored clip. Leave the row "
                    "out, or import the new clip into a new study",
                )
            )
            continue
        try:
            # Blindness: tool names in comments or XMP must not reach raters.
            data = strip_metadata(path.read_bytes())
            info = gif_info(data)
        except ValueError as exc:
            problems.append(Problem(name, line, 1, f"{record['path']}: {exc}"))
            continue
        rows.append(ImportRow(line=line, clip=clip, data=data, info=info))
    if problems:
        raise StudyFileError(problems)
    if not rows:
        raise StudyFileError([Problem(name, 2, 1, "no rows: nothing to import")])
    return rows


def _clips_in_trials(session: Session, study: Study) -> dict[int, tuple[int, int]]:
    """{clip id: (trials, answered trials)} for the study's clips that were ever in a trial."""
    counts: dict[int, tuple[int, int]] = {}
    rows = session.execute(
        select(Matchup.clip_a_id, Matchup.clip_b_id, func.count(), func.count(Trial.answered_at))
        .join(Trial, Trial.matchup_id == Matchup.id)
        .where(Matchup.study_id == study.id)
        .group_by(Matchup.clip_a_id, Matchup.clip_b_id)
    )
    for clip_a, clip_b, trials, answered in rows:
        for clip_id in (clip_a, clip_b):
            before = counts.get(clip_id, (0, 0))
            counts[clip_id] = (before[0] + trials, before[1] + answered)
    return counts


def _row_problem(
    record: dict[str, str], prompt: Prompt | None, arm: Arm | None, path: Path, arms: dict
) -> str | None:
    if prompt is None:
        return f"prompt {record['prompt'][:80]!r} is not in this study"
    if arm is None:
        return f"arm {record['arm']!r} is not in this study: arms are {', '.join(arms)}"
    if not path.is_file():
        return f"file {record['path']!r} not found (paths are relative to the manifest)"
    if path.stat().st_size > MAX_GIF_BYTES:
        return f"file {record['path']!r} is over {MAX_GIF_BYTES // 2**20} MiB"
    return None
