"""Bring your own clips: a manifest CSV (prompt, arm, path) of GIFs rendered elsewhere.

Optional cost columns carry what each clip cost to render, under the names the render worker
stores in a clip's telemetry (clips.csv exports them with a `telemetry_` prefix): total_s,
denoise_s, denoiser_passes, device, peak_memory_bytes. A blank cell means "not recorded"; without
total_s an arm has no render cost, and the dashboard says so rather than guessing which arm is
fastest.

Imported GIFs are stored without comments or application data other than the loop count, so a
tool name inside a file cannot tell raters which pipeline made it.

Each imported GIF is measured like a rendered one (app/clips/measures.py: motion, flicker,
sharpness, colourfulness), from the bytes stored; a re-import replaces the clip's measures.

Every row is checked before anything is stored, and every bad row is reported at once; the clips
are written in one transaction, so a bad manifest changes nothing. `replace` re-imports done
clips, but never one that evaluators have been given in a trial: its votes judged the old bytes.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.clips import service as clips_service
from app.clips.gif import gif_info, strip_metadata
from app.clips.measures import measure_or_none
from app.clips.models import Clip, ClipStatus
from app.db import utcnow
from app.rating.models import Matchup, Trial
from app.storage import Storage
from app.studies.models import Arm, Prompt, Study
from app.studies.studyfile import Problem, StudyFileError, _field_offsets
from app.text import first_refused, refusal

MANIFEST_COLUMNS = ("prompt", "arm", "path")
COST_COLUMNS = ("total_s", "denoise_s", "denoiser_passes", "device", "peak_memory_bytes")
MAX_DEVICE_CHARS = 200
MAX_GIF_BYTES = 64 * 1024 * 1024


@dataclass
class ImportRow:
    line: int
    clip: Clip
    data: bytes
    info: dict[str, Any]  # gif_info's: frames, width, height, duration_ms...
    cost: dict[str, Any] = field(default_factory=dict)  # telemetry keys: total_s, device...


def import_manifest(
    *, session: Session, study: Study, manifest: Path, storage: Storage, replace: bool = False
) -> int:
    """Validate every row, then store the GIFs and mark their clips done; returns the count."""
    rows = _validate(session=session, study=study, manifest=manifest, replace=replace)
    # Measured before the first write: on SQLite a write holds the database-wide lock.
    measures = [measure_or_none(row.data) for row in rows]
    now = utcnow()
    for row, measured in zip(rows, measures, strict=True):
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
        clip.telemetry = {
            **row.cost,
            "imported_from": str(manifest.name),
            "imported_line": row.line,
        }
        clip.error, clip.finished_at, clip.lease_expires_at = None, now, None
        clips_service.record_measures(session=session, clip_id=clip.id, measures=measured)
    session.flush()
    return len(rows)


def _validate(*, session: Session, study: Study, manifest: Path, replace: bool) -> list[ImportRow]:
    name = manifest.name
    try:
        text = manifest.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyFileError([Problem(name, 1, 1, f"cannot read the manifest: {exc}")]) from exc
    lines = text.splitlines()
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = _check_header(reader.fieldnames or [], name=name, line=lines[0] if lines else "")
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
        offsets = _field_offsets(lines[line - 1] if line <= len(lines) else "")
        raw = {k.strip().lower(): v or "" for k, v in record.items() if k}
        record = {k: v.strip() for k, v in raw.items()}
        cost, bad_costs = _costs(record)
        problems += [Problem(name, line, _at(offsets, columns[c]), m) for c, m in bad_costs]
        if refused := _refused_cells(raw, columns, offsets, name=name, line=line):
            problems += refused  # and nothing of the row is used: no path with a NUL is opened
            continue
        prompt = prompts.get(" ".join(record["prompt"].split()))
        arm: Arm | None = arms.get(record["arm"])
        path = (manifest.parent / record["path"]).resolve()
        found = _row_problem(record, prompt, arm, path, arms)
        if found:
            problems.append(Problem(name, line, 1, found))
            continue
        assert prompt is not None and arm is not None  # else _row_problem said which is missing
        clip = clips[(prompt.id, arm.id)]
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
        if not bad_costs:
            rows.append(ImportRow(line=line, clip=clip, data=data, info=info, cost=cost))
    if problems:
        raise StudyFileError(sorted(problems, key=lambda p: (p.line, p.column)))
    if not rows:
        raise StudyFileError([Problem(name, 2, 1, "no rows: nothing to import")])
    return rows


def _check_header(header: Sequence[str], *, name: str, line: str) -> dict[str, int]:
    """{column: index} of a header holding prompt, arm, path and any of the cost columns."""
    names = [h.strip().lower() for h in header]
    offsets = _field_offsets(line)
    allowed = (*MANIFEST_COLUMNS, *COST_COLUMNS)
    problems = []
    for index, column in enumerate(names):
        col = _at(offsets, index)
        if column not in allowed:
            message = (
                f"unknown column {header[index]!r}: the manifest has {', '.join(MANIFEST_COLUMNS)}"
                f" and optionally {', '.join(COST_COLUMNS)}"
            )
            problems.append(Problem(name, 1, col, message))
        elif names.index(column) != index:
            problems.append(Problem(name, 1, col, f"duplicate column {column!r}"))
    for required in MANIFEST_COLUMNS:
        if required not in names:
            problems.append(Problem(name, 1, 1, f"missing column {required!r} in the header"))
    if problems:
        raise StudyFileError(problems)
    return {column: index for index, column in enumerate(names)}


def _refused_cells(
    raw: dict[str, str], columns: dict[str, int], offsets: list[int], *, name: str, line: int
) -> list[Problem]:
    """A problem at each refused character in the prompt, arm and path cells (the device cell
    is checked with the other cost cells); whitespace is collapsed or stripped, so it is fine."""
    problems = []
    for column in MANIFEST_COLUMNS:
        index = first_refused(raw[column], allow="\t\n\r")
        if index is not None:
            at = _at(offsets, columns[column]) + index
            problems.append(Problem(name, line, at, f"{column}: {refusal(raw[column][index])}"))
    return problems


def _at(offsets: list[int], index: int) -> int:
    """The 1-based column where field `index` starts (1 when the line does not show it)."""
    return offsets[index] if index < len(offsets) else 1


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
    record: dict[str, str], prompt: Prompt | None, arm: Arm | None, path: Path, arms: dict[str, Arm]
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


# --- render cost ----------------------------------------------------------------------------

_DECIMAL = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
MAX_SECONDS = 86_400.0  # a day per clip: larger figures are milliseconds by mistake
MAX_PASSES = 100_000
MIN_MEMORY_BYTES = 2**20  # smaller figures are GiB or MiB written where bytes belong


def _costs(record: dict[str, str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The row's cost cells as telemetry ({} when none), and (column, message) per bad cell.
    Blank cells are "not recorded" and left out."""
    cost: dict[str, Any] = {}
    bad: list[tuple[str, str]] = []
    for column in COST_COLUMNS:
        raw = record.get(column, "")
        if not raw:
            continue
        try:
            cost[column] = _COST_PARSERS[column](raw)
        except ValueError as exc:
            bad.append((column, f"{column} {raw[:40]!r}: {exc}"))
    if cost.get("denoise_s", 0) > cost.get("total_s", math.inf):
        bad.append(("denoise_s", "denoise_s is more than total_s, which includes it"))
    return cost, bad


def _seconds(raw: str) -> float:
    if not _DECIMAL.fullmatch(raw) or not 0 < float(raw) <= MAX_SECONDS:
        raise ValueError(f"expected seconds per clip, a number over 0 and up to {MAX_SECONDS:,.0f}")
    return float(raw)


def _passes(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_PASSES:
        raise ValueError(f"expected a whole number of denoiser (UNet) passes, 1 to {MAX_PASSES:,}")
    return int(raw)


def _memory(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit():
        raise ValueError("expected a whole number of bytes, e.g. 12884901888 for 12 GiB")
    if int(raw) < MIN_MEMORY_BYTES:
        raise ValueError(
            "this is in bytes, and under 1 MiB is no video model's peak; "
            "write 12 GiB as 12884901888"
        )
    return int(raw)


def _device(raw: str) -> str:
    if (index := first_refused(raw)) is not None:
        raise ValueError(refusal(raw[index]))
    if len(raw) > MAX_DEVICE_CHARS:
        raise ValueError(f"expected a device name of at most {MAX_DEVICE_CHARS} characters")
    return raw


_COST_PARSERS: dict[str, Callable[[str], Any]] = {
    "total_s": _seconds,
    "denoise_s": _seconds,
    "denoiser_passes": _passes,
    "device": _device,
    "peak_memory_bytes": _memory,
}
