"""Exports as rows: votes and clips streamed from SQL in batches (flat memory), the statistics
as a long table, all written as spreadsheet-safe CSV.

Spreadsheet safety (OWASP "CSV injection"): a text cell that starts with `=`, `+`, `-`, `@`, a tab
or a carriage return is prefixed with `'`, so Excel, LibreOffice and Google Sheets show it as text
instead of evaluating it. Numbers are written as numbers. Files start with a UTF-8 byte-order mark
(Excel needs it to read UTF-8), use RFC 4180 quoting and CRLF line ends.
"""

from __future__ import annotations

import csv
import heapq
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, Literal

from sqlalchemy import Integer, String, select, type_coerce
from sqlalchemy.orm import Session

from app.analysis import METHOD_NOTE, Verdict, hypothesis_alpha
from app.analysis.speed import fastest_arm, unpriced_arms
from app.clips import service as clips_service
from app.clips.models import Clip
from app.dashboard import service as dashboard_service
from app.dashboard.schemas import Advanced, Dashboard, Filters
from app.dashboard.sqltext import millis_between, timestamp_text
from app.rating import gold, votes
from app.rating.models import Evaluator, GoldPair, Matchup, Trial, Vote
from app.studies.models import Arm, Prompt, Study

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
BOM = "\ufeff"
BATCH_ROWS = 5_000
CHUNK_CHARS = 64 * 1024
WRITE_ROWS = 1_000  # rows handed to the csv writer at once

VOTE_COLUMNS = (
    "study", "vote_id", "trial_id", "evaluator_id", "external_id", "external_study_id",
    "external_session_id", "prompt_id", "prompt",
    "theme", "criterion", "left_arm", "right_arm", "choice", "winner", "left_clip_id",
    "right_clip_id", "matchup_id", "position", "is_repeat", "shown_at", "answered_at",
    "response_ms", "client_load_ms", "client_view_ms", "loops_left", "loops_right",
    "watched_both", "hidden_ms", "flagged", "flag_reason", "gold", "gold_correct", "gold_kind",
)  # fmt: skip
# A clip's own columns are named as in the `clip` table (its measured GIF: `width`, `num_frames`,
# `size_bytes`), its arm's settings with `arm_` (what was asked for: `arm_width`,
# `arm_num_frames`), its telemetry keys with `telemetry_` (what the renderer reported), its
# measures with `measure_` (app/clips/measures.py; `measure_versions` names their versions).
ARM_COLUMNS = (
    "arm_kind", "arm_base_model", "arm_motion_adapter", "arm_revision", "arm_steps",
    "arm_guidance_scale", "arm_negative_prompt", "arm_scheduler", "arm_scheduler_beta_schedule",
    "arm_scheduler_timestep_spacing", "arm_scheduler_clip_sample", "arm_scheduler_steps_offset",
    "arm_num_frames", "arm_width", "arm_height", "arm_fps",
)  # fmt: skip
CLIP_COLUMNS = (
    "study", "clip_id", "prompt_id", "prompt_position", "prompt", "theme", "seed", "arm",
    *ARM_COLUMNS, "status", "source", "tiny", "storage_key", "sha256", "size_bytes",
    "num_frames", "width", "height", "duration_ms", "attempts", "finished_at", "error",
)  # fmt: skip
_BOOL = {0: "false", 1: "true"}  # also False and True (equal keys)
_NO_EXTERNAL = ("", "", "")  # an evaluator who joined after the export began
SUMMARY_LEADING = ("table", "criterion", "theme", "arm", "opponent", "evaluator")
ADJUSTED_METHOD = (
    "Logistic model of the focus arm winning a decisive vote on the arm, the side and the "
    "differences in the clip measures (in clip standard deviations); effect = the arm's win "
    "probability at equal measures, sides balanced; 95% intervals from prompt-clustered "
    "jackknife standard errors with t(prompts - 1); ties and repeats left out; fixed-sample."
)
Kind = Literal["votes", "clips", "summary", "summary.json"]
KINDS: tuple[str, ...] = ("votes", "clips", "summary", "summary.json")


def export_chunks(
    *, session: Session, study: Study, kind: Kind, filters: Filters | None = None, bom: bool = True
) -> Iterator[str]:
    """The text of one export, in chunks (votes and clips stream; the summary is computed first).
    `bom`: start CSV with a UTF-8 byte-order mark (files for spreadsheets; not for pipes)."""
    if kind == "votes":
        vote_table = vote_rows(session=session, study=study)
        yield from csv_chunks(VOTE_COLUMNS, vote_table, bom=bom, sanitize=False)
    elif kind == "clips":
        columns = clip_columns(session=session, study=study)
        clip_table = clip_rows(session=session, study=study, columns=columns)
        yield from csv_chunks(columns, clip_table, bom=bom)
    elif kind in ("summary", "summary.json"):
        d, a = dashboard_service.full(session=session, study=study, filters=filters or Filters())
        if kind == "summary":
            yield from csv_chunks(*summary_csv_rows(summary_tables(d, a)), bom=bom)
        else:
            yield json.dumps(summary_json(d, a), indent=2, default=_json_default) + "\n"
    else:
        raise ValueError(f"unknown export {kind!r}: one of {', '.join(KINDS)}")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# --- CSV ----------------------------------------------------------------------------------------


def safe_cell(value: Any) -> Any:
    """A value as a spreadsheet-safe CSV cell (text that could be a formula gets a `'`)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_chunks(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    bom: bool = True,
    sanitize: bool = True,
) -> Iterator[str]:
    """CSV text in chunks of about CHUNK_CHARS, one header line then one line per row.
    `sanitize=False` for rows whose cells are already safe (see `vote_rows`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if bom:
        buffer.write(BOM)
    writer.writerow([safe_cell(name) for name in header])
    iterator = iter(rows)
    while batch := list(islice(iterator, WRITE_ROWS)):
        writer.writerows(batch if not sanitize else ([safe_cell(v) for v in r] for r in batch))
        if buffer.tell() >= CHUNK_CHARS:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


# --- votes --------------------------------------------------------------------------------------


def vote_rows(*, session: Session, study: Study) -> Iterator[tuple[Any, ...]]:
    """One tuple per vote (VOTE_COLUMNS), in vote id order, BATCH_ROWS fetched at a time
    (a server-side cursor on PostgreSQL), with cells ready for CSV: text that could be a
    formula already neutralised, booleans as true/false. Prompts, arms and evaluators come
    from small lookups (sanitised once each), so each vote joins only its trial and matchup
    (`app.rating.votes`: the join, the study filter in id order, the sides)."""
    dialect = session.get_bind().dialect.name
    arms = {arm.id: arm.name for arm in study.arms}
    prompts = {
        pid: (safe_cell(text), safe_cell(theme))
        for pid, text, theme in session.execute(
            select(Prompt.id, Prompt.text, Prompt.theme).where(Prompt.study_id == study.id)
        )
    }
    # evaluator id -> (participant id, platform study id, platform session id), cells ready
    external = {
        evaluator: tuple(safe_cell(value) for value in values)
        for evaluator, *values in session.execute(
            select(
                Evaluator.id,
                Evaluator.external_id,
                Evaluator.external_study_id,
                Evaluator.external_session_id,
            ).where(Evaluator.study_id == study.id)
        )
    }
    query = votes.study_votes(
        Vote.id,
        Trial.id,
        Trial.evaluator_id,
        Matchup.prompt_id,
        Vote.criterion,
        type_coerce(Vote.choice, String),
        votes.left_arm_id,
        votes.right_arm_id,
        votes.left_clip_id,
        votes.right_clip_id,
        Matchup.id,
        *_trial_columns(dialect),
        study_id=study.id,
        dialect=dialect,
    ).order_by(Vote.id)
    result = session.connection().execution_options(yield_per=BATCH_ROWS).execute(query)
    slug = study.slug
    # Gold trials' votes (app/rating/gold.py; a few per evaluator) are read whole, then merged
    # in vote id order: they judge no matchup, so the query above never sees them.
    golden = _gold_rows(session=session, study=study, prompts=prompts, external=external)

    def regular() -> Iterator[tuple[Any, ...]]:
        for rows in result.partitions():
            for row in rows:
                yield _vote_row(row, study=slug, arms=arms, prompts=prompts, external=external)

    yield from heapq.merge(regular(), golden, key=lambda row: row[1])


def _gold_rows(
    *,
    session: Session,
    study: Study,
    prompts: dict[int, tuple[str, str]],
    external: dict[int, tuple[Any, ...]],
) -> list[tuple[Any, ...]]:
    """The votes of the study's gold trials as VOTE_COLUMNS rows, in vote id order: `gold`
    true, `gold_correct` the trial's (the original chosen on every criterion its kind scores),
    no arm, no winner and no matchup (a gold pair compares no arms); a twin's clip id is empty
    (it is no clip), a mismatched pair's other clip is the other prompt's."""
    dialect = session.get_bind().dialect.name
    query = (
        select(
            Vote.id,
            Trial.id,
            Trial.evaluator_id,
            GoldPair.prompt_id,
            Vote.criterion,
            type_coerce(Vote.choice, String),
            GoldPair.kind,
            GoldPair.clip_id,
            GoldPair.other_clip_id,
            Trial.a_on_left,
            *_trial_columns(dialect),
        )
        .select_from(Vote)
        .join(Trial, Trial.id == Vote.trial_id)
        .join(GoldPair, GoldPair.id == Trial.gold_pair_id)
        .where(GoldPair.study_id == study.id)
        .order_by(Vote.id)
    )
    rows = session.execute(query).all()
    answers: dict[int, dict[str, str]] = {}
    for row in rows:
        answers.setdefault(row[1], {})[row[4]] = row[5]
    criteria = study.criterion_keys
    out = []
    for row in rows:
        (vote_id, trial_id, evaluator_id, prompt_id, criterion, choice, kind, clip_id,
         other_clip_id, a_on_left, *trial) = row  # fmt: skip
        correct = gold.is_correct(
            kind=kind, criteria=criteria, answers=answers[trial_id], a_on_left=a_on_left
        )
        left_clip, right_clip = votes.sides(clip_id, other_clip_id, a_on_left)
        text, theme = prompts[prompt_id]
        out.append((
            study.slug, vote_id, trial_id, evaluator_id,
            *external.get(evaluator_id, _NO_EXTERNAL), prompt_id, text, theme, criterion,
            "", "", choice, "", left_clip, right_clip, None, *_trial_cells(trial),
            "true", safe_cell(correct), str(kind),
        ))  # fmt: skip
    return out


def _vote_row(
    row: Sequence[Any],
    *,
    study: str,
    arms: dict[int, str],
    prompts: dict[int, tuple[str, str]],
    external: dict[int, tuple[Any, ...]],
) -> tuple[Any, ...]:
    (vote_id, trial_id, evaluator_id, prompt_id, criterion, choice, left_arm, right_arm,
     left_clip_id, right_clip_id, matchup_id, *trial) = row  # fmt: skip
    winner = "tie" if choice == "tie" else arms[left_arm if choice == "left" else right_arm]
    text, theme = prompts[prompt_id]
    return (
        study, vote_id, trial_id, evaluator_id, *external.get(evaluator_id, _NO_EXTERNAL),
        prompt_id, text,
        theme, criterion, arms[left_arm], arms[right_arm], choice, winner, left_clip_id,
        right_clip_id, matchup_id, *_trial_cells(trial), "false", "", "",
    )  # fmt: skip


def _trial_columns(dialect: str) -> tuple[Any, ...]:
    """The trial's own columns of a votes.csv row, from `position` to `flag_reason`: the same
    for regular and gold trials (`_trial_cells` formats them)."""
    return (
        Trial.position,
        type_coerce(Trial.is_repeat, Integer),
        timestamp_text(Trial.shown_at, dialect),
        timestamp_text(Trial.answered_at, dialect),
        millis_between(Trial.shown_at, Trial.answered_at, dialect),
        Trial.client_load_seconds,
        Trial.client_view_seconds,
        Trial.loops_left,
        Trial.loops_right,
        type_coerce(Trial.watched_both, Integer),
        Trial.hidden_seconds,
        type_coerce(Trial.flagged, Integer),
        Trial.flag_reason,
    )


def _trial_cells(values: Sequence[Any]) -> tuple[Any, ...]:
    (position, is_repeat, shown, answered, response_ms, client_load, client_view, loops_left,
     loops_right, watched_both, hidden, flagged, reason) = values  # fmt: skip
    return (
        position, _BOOL[is_repeat], shown, answered, response_ms, _millis(client_load),
        _millis(client_view), loops_left, loops_right, _BOOL.get(watched_both, ""),
        _millis(hidden), _BOOL[flagged], safe_cell(reason),
    )  # fmt: skip


def _millis(seconds: float | None) -> int | None:
    """The rating page's own timing (seconds) in whole milliseconds, like `response_ms`."""
    return None if seconds is None else round(seconds * 1000)


# --- clips --------------------------------------------------------------------------------------


def clip_columns(*, session: Session, study: Study) -> list[str]:
    """CLIP_COLUMNS then `telemetry_<key>` for every telemetry key found (nested keys joined
    with `_`), then `measure_<name>` for every measure found (app/clips/measures.py) and
    `measure_versions` ("motion_mean=1;motion_std=1;..."), when the study has any."""
    keys: dict[str, None] = {}
    for (telemetry,) in session.execute(_clips_query(study).with_only_columns(Clip.telemetry)):
        keys.update(dict.fromkeys(_flatten(telemetry or {}, "telemetry_")))
    measures = clips_service.clip_measures(session=session, study_id=study.id)
    names = [f"measure_{name}" for name in clips_service.measure_names(measures)]
    return [*CLIP_COLUMNS, *keys, *names, *(["measure_versions"] if names else [])]


def _clips_query(study: Study) -> Any:
    return (
        select(Clip, Prompt, Arm)
        .join(Prompt, Prompt.id == Clip.prompt_id)
        .join(Arm, Arm.id == Clip.arm_id)
        .where(Prompt.study_id == study.id)
        .order_by(Prompt.position, Arm.position)
    )


def clip_rows(*, session: Session, study: Study, columns: Sequence[str]) -> Iterator[list[Any]]:
    """One list per clip (prompt order, then arm order) matching `columns`."""
    measures = clips_service.clip_measures(session=session, study_id=study.id)
    for clip, prompt, arm in session.execute(_clips_query(study)):
        spec = arm.arm_spec
        scheduler = spec.resolved_scheduler
        values: dict[str, Any] = {
            "study": study.slug, "clip_id": clip.id, "prompt_id": prompt.id,
            "prompt_position": prompt.position, "prompt": prompt.text, "theme": prompt.theme,
            "seed": prompt.seed, "arm": arm.name, "arm_kind": spec.kind,
            "arm_base_model": spec.base_model, "arm_motion_adapter": spec.motion_adapter,
            "arm_revision": spec.revision, "arm_steps": spec.steps,
            "arm_guidance_scale": spec.guidance_scale,
            "arm_negative_prompt": spec.negative_prompt, "arm_scheduler": scheduler.name,
            "arm_scheduler_beta_schedule": scheduler.beta_schedule,
            "arm_scheduler_timestep_spacing": scheduler.timestep_spacing,
            "arm_scheduler_clip_sample": scheduler.clip_sample,
            "arm_scheduler_steps_offset": scheduler.steps_offset,
            "arm_num_frames": spec.num_frames, "arm_width": spec.width,
            "arm_height": spec.height, "arm_fps": spec.fps,
            "status": clip.status.value, "source": clip.source, "tiny": clip.tiny,
            "storage_key": clip.storage_key, "sha256": clip.sha256,
            "size_bytes": clip.size_bytes, "num_frames": clip.num_frames, "width": clip.width,
            "height": clip.height, "duration_ms": clip.duration_ms, "attempts": clip.attempts,
            "finished_at": clip.finished_at.isoformat() if clip.finished_at else None,
            "error": clip.error,
        }  # fmt: skip
        values.update(_flatten(clip.telemetry or {}, "telemetry_"))
        if measured := measures.get(clip.id):
            values.update({f"measure_{name}": m.value for name, m in measured.items()})
            values["measure_versions"] = ";".join(f"{n}={m.version}" for n, m in measured.items())
        yield [values.get(name) for name in columns]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}_"))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


# --- the statistics -----------------------------------------------------------------------------


def summary_tables(d: Dashboard, a: Advanced) -> dict[str, list[dict[str, Any]]]:
    """Every statistic as flat rows, by table name: first the plan's anytime-valid verdicts,
    then the fixed-sample statistics (valid only at a sample size fixed in advance)."""
    s, b = d.summary, a.bootstrap
    strengths = [
        {
            "criterion": bt.criterion,
            **st.as_row(),
            "tie_parameter": bt.tie_parameter,
            "n_votes": bt.n_votes,
            "n_prompts": bt.n_prompts,
            "n_boot": bt.n_boot,
        }
        for bt in b.bradley_terry
        for st in bt.strengths
    ]
    return {
        "verdicts": [v.as_row() for v in verdict_list(d)],
        "pairwise": [r.as_row() for r in s.overall],
        "pairwise_by_theme": [r.as_row() for r in s.by_theme],
        "bootstrap_win_rate": [r.as_row() for r in b.win_rates],
        "power": [r.as_row() for r in s.power],
        "position_bias": [r.as_row() for r in s.position_bias],
        "arm_preference": [r.as_row() for r in s.arm_preference],
        "bradley_terry": strengths,
        "speed": [r.as_row() for r in d.speed],
        "agreement": [r.as_row() for r in a.agreement],
        "evaluator_quality": [r.as_row() for r in a.evaluators],
        **confound_tables(a),
    }


def confound_tables(a: Advanced) -> dict[str, list[dict[str, Any]]]:
    """The clip measures beside the votes: each arm's spread of every measure, the logistic
    slopes, the measure-adjusted preferences (empty tables when no clip is measured)."""
    c = a.confounds
    return {
        "measure_spread": [r.as_row() for r in c.spreads] if c else [],
        "measure_slope": [r.as_row() for r in c.slopes] if c else [],
        "adjusted": [r.as_row() for r in c.adjusted] if c else [],
    }


def adjusted_basis(a: Advanced) -> dict[str, Any]:
    """What summary.json's `adjusted` rests on: the model, the scale, why it is empty or short."""
    c = a.confounds
    return {
        "method": ADJUSTED_METHOD,
        "measures": list(c.measures) if c else [],
        "measured_clips": c.n_clips if c else 0,
        "reason": c.reason if c else "not computed",
        "notes": list(c.notes) if c else [],
    }


def summary_csv_rows(
    tables: dict[str, list[dict[str, Any]]],
) -> tuple[list[str], list[list[Any]]]:
    """One long table: a `table` column naming the statistic, then the union of all columns."""
    columns: dict[str, None] = dict.fromkeys(SUMMARY_LEADING)
    for rows in tables.values():
        for row in rows:
            columns.update(dict.fromkeys(row))
    header = list(columns)
    body = [
        [name if column == "table" else row.get(column) for column in header]
        for name, rows in tables.items()
        for row in rows
    ]
    return header, body


def verdict_list(d: Dashboard) -> tuple[Verdict, ...]:
    return d.verdicts.summary.verdicts if d.verdicts is not None else ()


def verdict_basis(d: Dashboard) -> dict[str, Any] | None:
    """What the verdicts rest on: the plan, the evaluators and votes counted, the method."""
    v = d.verdicts
    if v is None:
        return None
    return {
        "method": METHOD_NOTE,
        "alpha": v.plan.alpha,
        "alpha_per_hypothesis": hypothesis_alpha(v.plan),
        "hypotheses": len(v.plan.hypotheses),
        "primary": [
            {"criterion": h.criterion, "arm": h.arm, "opponent": h.opponent} for h in v.plan.primary
        ],
        "stop": v.plan.stop,
        "budget": v.plan.budget,
        "adaptive": v.plan.adaptive,
        "compare": v.plan.compare,
        # adaptive plans: the arm pairs new trials go to first now (None: uniform)
        "wanted_pairs": None if v.wanted is None else [list(pair) for pair in v.wanted],
        # compare = "best": the arm identified as best per primary criterion (None: not yet)
        "best": {criterion: arm for criterion, arm in v.best} if v.best else None,
        "evaluators_counted": v.summary.evaluators,
        "votes_counted": v.summary.votes,
        "evaluators_waiting": v.waiting,
        "study_closed": v.closed,
        "plan_locked_at": v.locked_at.isoformat() if v.locked_at else None,
        "plan_changes": [
            {"changed_at": c.changed_at.isoformat(), "reason": c.reason, "changes": list(c.lines)}
            for c in v.changes
        ],
        "note": v.note,
    }


def summary_json(d: Dashboard, a: Advanced) -> dict[str, Any]:
    """The statistics as one JSON document (the same tables as summary.csv, plus context).

    `verdicts`: one object per hypothesis of the study's plan, keys `criterion`, `arm`,
    `opponent`, `hypothesis`, `margin`, `status`, `lower`, `upper`, `votes`, `alpha`
    (`app.analysis.schemas.Verdict`); `verdict_basis` says what they rest on. `tables`
    repeats them as the `verdicts` table beside the fixed-sample ones.

    `adjusted`: per criterion, focus arm and opponent, and covariate set, the focus arm's
    decisive win probability with the clip measures held equal, keys `criterion`, `arm`,
    `opponent`, `covariates` (measure names), `effect`, `lower`, `upper` (fractions 0..1,
    fixed-sample 95%, prompt-clustered) and `unadjusted_effect` (the same model without the
    measures); empty when no clip is measured (`adjusted_basis` says why)."""
    return {
        "study": d.slug,
        "name": d.name,
        "generated_at": d.generated_at.isoformat(),
        "filters": d.filters.model_dump(),
        "focus_arm": d.focus,
        # Named only when every arm has a render cost; otherwise the arms without one.
        "fastest_arm": fastest_arm([r.speed for r in d.speed]),
        "arms_without_render_cost": list(unpriced_arms(r.speed for r in d.speed)),
        "arms": list(d.arms),
        "criteria": [{"key": c.key, "label": c.label} for c in d.criteria],
        "themes": list(d.summary.themes),
        "n_votes": d.summary.n_votes,
        "alpha": d.summary.alpha,
        "warnings": list(d.summary.warnings),
        "verdicts": [v.to_dict() for v in verdict_list(d)],
        "verdict_basis": verdict_basis(d),
        "adjusted": [r.to_json() for r in a.confounds.adjusted] if a.confounds else [],
        "adjusted_basis": adjusted_basis(a),
        "tables": summary_tables(d, a),
    }
