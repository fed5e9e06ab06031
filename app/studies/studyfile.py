"""Read and validate a study: a TOML study file plus a prompts CSV.

Every problem is reported at once with file, line and column (`prompts.csv:14:1: prompt is
empty`), and nothing touches the database until the whole study is valid. Longer than most
modules on purpose: every table of the study file and the prompts CSV are checked here, so that
each problem is placed at its file, line and column the same way.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, StringConstraints, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails

# The [analysis] table's model, read here with the rest of the file (and importable from here).
from app.studies.analysis import AnalysisSpec as AnalysisSpec
from app.studies.schemas import (
    DEFAULT_CRITERIA,
    MAX_PROMPT_CHARS,
    PARAM_PATTERN,
    PATTERN_WORDS,
    ArmSpec,
    Criterion,
    PipelineKind,
    RenderSpec,
    SchedulerSpec,
    Slug,
    Strict,
    arm_differences,
    check_completion_url,
    gold_problem,
    slugify,
)
from app.text import MULTILINE, first_refused, is_refused, plural, refusal, visible

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_PROMPTS = 10_000
MAX_THEME_CHARS = 100
MAX_REFUSED_LINES = 20  # lines with refused characters listed per file; the rest are counted
PROMPT_COLUMNS = ("prompt", "theme", "seed")
REQUIRED_COLUMNS = ("prompt", "theme")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        # Inert wherever it is shown: a refused character quoted back comes out as an escape.
        return visible(f"{self.file}:{self.line}:{self.column}: {self.message}")


class StudyFileError(ValueError):
    """A study file or prompts CSV is invalid; `problems` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        # In reading order: by file (in the order the files were checked), line, column.
        files = {name: rank for rank, name in enumerate(dict.fromkeys(p.file for p in problems))}
        self.problems = sorted(problems, key=lambda p: (files[p.file], p.line, p.column))
        lines = "\n".join(f"  {p}" for p in self.problems)
        count = plural(len(problems), "problem")
        super().__init__(f"{count} in the study; nothing was created:\n{lines}")


class RatingSpec(Strict):
    """How evaluators rate. Defaults suit a lab study; crowd studies set a quota."""

    trials_per_evaluator: int | None = Field(default=None, ge=1, le=10_000)
    open_enrollment: bool = False
    external_id_param: str = Field(default="PROLIFIC_PID", pattern=PARAM_PATTERN)
    repeat_trials: int = Field(default=0, ge=0, le=50)  # matchups repeated with sides swapped
    # Gold pairs (docs/quality.md): this share of an evaluator's trials has a known answer.
    gold_rate: float = Field(default=0.0, ge=0, le=0.5)
    gold_min_accuracy: float = Field(default=0.7, ge=0, le=1)
    min_view_seconds: float = Field(default=0.0, ge=0, le=600)
    fast_trial_seconds: float = Field(default=0.0, ge=0, le=600)  # faster answers get flagged
    completion_code: str | None = Field(default=None, max_length=64)
    # Trials answered before both clips played this many whole loops on screen get flagged
    # (0: off); measured by the rating page (a submit's `watch`), see README "Watch telemetry".
    min_loops: float = Field(default=0.0, ge=0, le=100)
    # Where a finished evaluator is sent: an https address with {code} where the completion
    # (or screen-out) code goes, e.g. Prolific's "https://app.prolific.com/submissions/complete?cc={code}".
    completion_url: str | None = Field(default=None, max_length=500)
    # The code given instead of the completion code to evaluators who failed the gold checks.
    screenout_code: str | None = Field(default=None, min_length=1, max_length=64)
    # Query parameters carrying the platform's study and session ids (recorded on the evaluator).
    external_study_param: str = Field(default="STUDY_ID", pattern=PARAM_PATTERN)
    external_session_param: str = Field(default="SESSION_ID", pattern=PARAM_PATTERN)

    @field_validator("completion_url")
    @classmethod
    def _completion_url(cls, value: str | None) -> str | None:
        return None if value is None else check_completion_url(value)

    @field_validator("screenout_code")
    @classmethod
    def _screenout_code(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and value == info.data.get("completion_code"):
            raise ValueError(
                "the screen-out code must differ from completion_code: it tells the platform "
                "that this evaluator failed the gold checks"
            )
        return value


class ArmEntry(Strict):
    """An arm as written in the study file: geometry falls back to [render]."""

    name: Slug
    kind: PipelineKind
    base_model: str
    motion_adapter: str
    revision: str | None = None
    steps: int
    guidance_scale: float
    negative_prompt: str | None = None
    scheduler: SchedulerSpec | None = None
    num_frames: int | None = None
    width: int | None = None
    height: int | None = None
    fps: int | None = None


class StudyFile(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    slug: Slug | None = None
    description: str = Field(default="", max_length=10_000)
    # Path of the prompts CSV, relative to this file: needed where the file is read from disk
    # (the CLI, `load_study_file`); an upload brings its CSV beside it and may leave it out.
    prompts: str | None = Field(default=None, min_length=1)
    criteria: list[Criterion | Annotated[str, StringConstraints(min_length=1)]] | None = None
    render: RenderSpec = RenderSpec()
    rating: RatingSpec = RatingSpec()
    analysis: AnalysisSpec = AnalysisSpec()
    arms: list[ArmEntry] = Field(min_length=2)

    @field_validator("criteria")
    @classmethod
    def _known_criteria(cls, value: list[Criterion | str] | None) -> list[Criterion | str] | None:
        known = {c.key for c in DEFAULT_CRITERIA}
        for item in value or []:
            if isinstance(item, str) and item not in known:
                raise ValueError(
                    f"unknown criterion {item!r}: use one of {sorted(known)} "
                    "or a table with key, label and question"
                )
        return value


@dataclass
class PromptRow:
    line: int
    text: str
    theme: str
    seed: int


@dataclass
class StudyDraft:
    """A fully validated study, ready to be written in one transaction."""

    name: str
    slug: str
    description: str
    criteria: list[Criterion]
    rating: RatingSpec
    arms: list[ArmSpec]
    prompts: list[PromptRow]
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)
    study_file: str = ""
    themes: list[str] = field(default_factory=list)


def load_study_file(path: Path) -> StudyDraft:
    """Read a study file and the prompts CSV it names (relative to the study file)."""
    toml_bytes = _read_limited(path)
    toml_text = decode_utf8(toml_bytes, path.name)
    raw = _parse_toml(toml_text, path.name)
    prompts_rel = raw.get("prompts")
    if not isinstance(prompts_rel, str) or not prompts_rel:
        raise StudyFileError(
            [Problem(path.name, 1, 1, "missing field 'prompts' (path of the prompts CSV)")]
        )
    prompts_path = (path.parent / prompts_rel).resolve()
    if not prompts_path.is_file():
        line = _find_key_line(toml_text, ("prompts",))
        message = f"prompts file {prompts_rel!r} not found at {prompts_path}"
        raise StudyFileError([Problem(path.name, line, 1, message)])
    return parse_study(
        toml_text=toml_text,
        toml_name=path.name,
        prompts_bytes=_read_limited(prompts_path),
        prompts_name=prompts_path.name,
    )


def parse_study(
    *, toml_text: str, toml_name: str, prompts_bytes: bytes, prompts_name: str
) -> StudyDraft:
    """Validate a study from its texts (used by the CLI and by the upload form)."""
    raw = _parse_toml(toml_text, toml_name)
    problems: list[Problem] = []
    spec = _validate_study(raw, toml_text, toml_name, problems)
    prompts = _parse_prompts(prompts_bytes, prompts_name, problems)
    if problems or spec is None:
        raise StudyFileError(problems)
    arms = _resolve_arms(spec, toml_text, toml_name)
    criteria = [
        next(d for d in DEFAULT_CRITERIA if d.key == c) if isinstance(c, str) else c
        for c in (spec.criteria or list(DEFAULT_CRITERIA))
    ]
    _check_unique(criteria, arms, toml_text, toml_name)
    _check_gold(spec.rating, [c.key for c in criteria], toml_text, toml_name)
    if differences := [] if spec.render.allow_arm_differences else arm_differences(arms):
        raise StudyFileError([_analysis_problem(*d, toml_text, toml_name) for d in differences])
    _check_analysis(
        spec.analysis,
        criteria=[c.key for c in criteria],
        arms=[a.name for a in arms],
        text=toml_text,
        name=toml_name,
    )
    return StudyDraft(
        name=spec.name,
        slug=spec.slug or slugify(spec.name),
        description=spec.description,
        criteria=criteria,
        rating=spec.rating,
        arms=arms,
        prompts=prompts,
        analysis=spec.analysis,
        study_file=toml_text,
        themes=sorted({p.theme for p in prompts}),
    )


def parse_analysis(
    *, toml_text: str, toml_name: str, criteria: Sequence[str], arms: Sequence[str]
) -> AnalysisSpec:
    """The `[analysis]` table of a study file, checked against a study's criteria and arms (what
    `vidarena study plan` reads: the study's other tables are not read; no table: the defaults).
    """
    raw = _parse_toml(toml_text, toml_name)
    table = raw.get("analysis", {})
    problems = list(_refused_in_toml({"analysis": table}, toml_text, toml_name).values())
    try:
        spec = AnalysisSpec.model_validate(table)
    except ValidationError as exc:
        problems.extend(_analysis_errors(exc.errors(), ("analysis",), toml_text, toml_name))
        raise StudyFileError(problems) from exc
    if problems:
        raise StudyFileError(problems)
    _check_analysis(spec, criteria=criteria, arms=arms, text=toml_text, name=toml_name)
    return spec


def _check_analysis(
    spec: AnalysisSpec, *, criteria: Sequence[str], arms: Sequence[str], text: str, name: str
) -> None:
    problems = [
        _analysis_problem(("analysis", *loc), message, text, name)
        for loc, message in spec.check(criteria=criteria, arms=arms)
    ]
    if problems:
        raise StudyFileError(problems)


def _analysis_errors(
    errors: Sequence[ErrorDetails], prefix: tuple[Any, ...], text: str, name: str
) -> list[Problem]:
    """Pydantic's errors of an [analysis] table (at `prefix`), each at its key or value."""
    problems: list[Problem] = []
    for err in errors:
        loc = (*prefix, *err["loc"])
        if err["type"] == "analysis_plan":
            for sub, message in err["ctx"]["problems"]:
                problems.append(_analysis_problem((*loc, *sub), message, text, name))
        else:
            key = err["type"] == "extra_forbidden"  # the key is wrong, not its value
            message = _message(err, {}, loc)
            problems.append(_analysis_problem(loc, message, text, name, at_key=key))
    return problems


def _analysis_problem(
    loc: tuple[Any, ...], message: str, text: str, name: str, *, at_key: bool = False
) -> Problem:
    line = _find_key_line(text, loc)
    where = ".".join(str(p) for p in loc)
    return Problem(name, line, _column(text, line, loc, at_key=at_key), f"{where}: {message}")


def _column(text: str, line: int, loc: tuple[Any, ...], *, at_key: bool = False) -> int:
    """1-based column of what `loc` points at on `line`: a list item (`primary = ["a", "b"]`),
    a value after `key =` (its key with `at_key`), or a key in a table header or dotted key;
    else 1."""
    rows = text.splitlines()
    row = rows[line - 1] if 0 < line <= len(rows) else ""
    last = loc[-1] if loc else None
    if isinstance(last, int):  # the n-th item of a one-line list
        items = [m.start() for m in re.finditer(r"(?<=[\[,])\s*[^,\s\]]", row)]
        if last < len(items):
            return items[last] + len(row[items[last] :]) - len(row[items[last] :].lstrip()) + 1
        return 1
    key = str(last)
    header = re.fullmatch(r"\s*\[\s*([\w.-]+)\s*\]\s*(#.*)?", row)
    if header is None:
        assignment = re.match(r"\s*([\w.-]+)\s*=\s*", row)
        if assignment and assignment[1].split(".")[-1] == key and not at_key:
            return assignment.end() + 1  # the value
    found = re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", row)
    return found.start() + 1 if found else 1


# --- TOML ---------------------------------------------------------------------------------


def _read_limited(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        problem = Problem(path.name, 1, 1, f"cannot read file: {exc.strerror}")
        raise StudyFileError([problem]) from exc
    if len(data) > MAX_FILE_BYTES:
        raise StudyFileError(
            [Problem(path.name, 1, 1, f"file is {len(data)} bytes; the limit is {MAX_FILE_BYTES}")]
        )
    return data


def decode_utf8(data: bytes, name: str) -> str:
    """UTF-8 text (a byte-order mark is fine), or a StudyFileError naming line and column."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise StudyFileError(
            [
                Problem(
                    name,
                    line,
                    column,
                    f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8",
                )
            ]
        ) from exc


def _parse_toml(text: str, name: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:  # RecursionError: deep nesting
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line, column = (int(match[1]), int(match[2])) if match else (1, 1)
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        char = _char_at(text, line, column) if match else ""
        if char and is_refused(char):  # a raw control character, which TOML itself forbids
            message = refusal(char, multiline=True)
        raise StudyFileError([Problem(name, line, column, f"invalid TOML: {message}")]) from exc


def _char_at(text: str, line: int, column: int) -> str:
    lines = text.split("\n")
    row = lines[line - 1] if 0 < line <= len(lines) else ""
    return row[column - 1] if 0 < column <= len(row) else ""


def _validate_study(
    raw: dict[str, Any], text: str, name: str, problems: list[Problem]
) -> StudyFile | None:
    refused = _refused_in_toml(raw, text, name)
    problems.extend(refused.values())
    try:
        spec = StudyFile.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            if loc in refused:
                continue  # said once, as the refused character
            if loc[:1] == ("analysis",):
                problems.extend(_analysis_errors([err], (), text, name))
                continue
            where = ".".join(str(p) for p in loc) or "study file"
            problems.append(
                Problem(name, _find_key_line(text, loc), 1, f"{where}: {_message(err, raw, loc)}")
            )
        return None
    return None if refused else spec


def _refused_in_toml(raw: dict[str, Any], text: str, name: str) -> dict[tuple[Any, ...], Problem]:
    """{location: problem} for each string (value or key) holding a refused character, placed at
    the character itself: written raw, or as a TOML escape such as `\\u202E`."""
    problems: dict[tuple[Any, ...], Problem] = {}
    taken: set[int] = set()
    for loc, value in _strings(raw):
        allow = MULTILINE if loc == ("description",) else ""
        index = first_refused(value, allow=allow)
        if index is None:
            continue
        char = value[index]
        line, column = _locate(text, _find_key_line(text, loc), char, taken)
        where = ".".join(str(p) for p in loc) or "study file"
        message = f"{where}: {refusal(char, multiline=bool(allow))}"
        problems[loc] = Problem(name, line, column, message)
    return problems


def _strings(value: Any, loc: tuple[Any, ...] = ()) -> Any:
    """(location, string) for every string in parsed TOML, keys included."""
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield (*loc, key), key
            yield from _strings(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*loc, index))


def _locate(text: str, line: int, char: str, taken: set[int]) -> tuple[int, int]:
    """Line and column of the first `char`, raw or escaped, after the `=` on `line` (else from
    its start) that no earlier problem claimed; (line, 1) when it cannot be found."""
    spellings = [re.escape(char), rf"\\u{_hex(char, 4)}", rf"\\U{_hex(char, 8)}"]
    short = {"\b": "b", "\t": "t", "\n": "n", "\f": "f", "\r": "r"}.get(char)
    if short:
        spellings.append(rf"\\{short}")
    # An escaped backslash is consumed first, so `\\u0000` (a backslash, then text) never matches.
    pattern = re.compile(rf"\\\\|{'|'.join(spellings)}")
    start = sum(len(row) + 1 for row in text.split("\n")[: line - 1])
    end_of_line = text.find("\n", start)
    equals = text.find("=", start, len(text) if end_of_line < 0 else end_of_line)
    for match in pattern.finditer(text, start if equals < 0 else equals + 1):
        offset = match.start()
        if match[0] == "\\\\" or offset in taken:
            continue
        taken.add(offset)
        return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, 1


def _hex(char: str, digits: int) -> str:
    """A pattern for the code point in `digits` hex digits of either case."""
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{ord(char):0{digits}x}")


def _message(err: Any, raw: dict[str, Any], loc: tuple[Any, ...]) -> str:
    if err["type"] == "missing":
        return "missing required field"
    if err["type"] == "extra_forbidden":
        return "unknown field (check the spelling; see examples/*/study.toml)"
    if err["type"] == "literal_error" and loc and loc[-1] == "kind":
        allowed = str(err["msg"]).removeprefix("Input should be ")
        return f"unknown pipeline kind {err['input']!r}: use {allowed}"
    return _plain_message(err)


def _plain_message(err: Any) -> str:
    """Pydantic's message, with a regular expression said in words."""
    if err["type"] == "string_pattern_mismatch":
        words = PATTERN_WORDS.get(err.get("ctx", {}).get("pattern", ""))
        if words:
            return f"{err['input']!r} is not valid: {words}"
    return str(err["msg"]).removeprefix("Value error, ")


def _resolve_arms(spec: StudyFile, text: str, name: str) -> list[ArmSpec]:
    arms: list[ArmSpec] = []
    problems: list[Problem] = []
    for index, entry in enumerate(spec.arms):
        values = entry.model_dump(exclude_none=True)
        for key, default in spec.render.model_dump(exclude={"allow_arm_differences"}).items():
            values.setdefault(key, default)
        try:
            arms.append(ArmSpec.model_validate(values))
        except ValidationError as exc:
            for err in exc.errors():
                loc = ("arms", index, *err["loc"])
                line = _find_key_line(text, loc)
                where = ".".join(str(p) for p in ("arms", index, *err["loc"]))
                problems.append(Problem(name, line, 1, f"{where}: {_plain_message(err)}"))
    if problems:
        raise StudyFileError(problems)
    return arms


def _check_gold(rating: RatingSpec, criteria: list[str], text: str, name: str) -> None:
    if (message := gold_problem(rating.gold_rate, criteria)) is not None:
        line = _find_key_line(text, loc := ("rating", "gold_rate"))
        raise StudyFileError([Problem(name, line, _column(text, line, loc), message)])


def _check_unique(criteria: list[Criterion], arms: list[ArmSpec], text: str, name: str) -> None:
    problems: list[Problem] = []
    for label, keys, loc_key in (
        ("arm name", [a.name for a in arms], "arms"),
        ("criterion key", [c.key for c in criteria], "criteria"),
    ):
        seen: set[str] = set()
        for index, key in enumerate(keys):
            if key in seen:
                line = _find_key_line(
                    text, (loc_key, index, "name" if loc_key == "arms" else "key")
                )
                problems.append(Problem(name, line, 1, f"duplicate {label} {key!r}"))
            seen.add(key)
    if problems:
        raise StudyFileError(problems)


def _find_key_line(text: str, loc: tuple[Any, ...]) -> int:
    """Best-effort line of a pydantic error location in TOML text (tomllib keeps no positions).

    Walks table headers: `[[arms]]` occurrences are counted to find `arms.<index>`, then the
    first `key =` line inside that table. Falls back to the table header, then to line 1.
    """
    lines = text.splitlines()
    table: tuple[str, ...] = ()
    counts: dict[str, int] = {}
    best = 1
    target = [str(p) for p in loc]
    for number, raw_line in enumerate(lines, start=1):
        line = raw_line.strip()
        if header := re.fullmatch(r"\[\[\s*([\w.-]+)\s*\]\]", line):
            key = header[1]
            counts[key] = counts.get(key, -1) + 1
            table = (*key.split("."), str(counts[key]))
        elif header := re.fullmatch(r"\[\s*([\w.-]+)\s*\]", line):
            table = tuple(header[1].split("."))
        else:
            assignment = re.match(r"([\w.-]+)\s*=", line)
            if assignment is None:
                continue
            path = [*table, *assignment[1].split(".")]
            if path == target[: len(path)] and len(path) >= len(target[:1]):
                if path == target:
                    return number
                best = number
            elif "." in assignment[1] and path[: len(target)] == target:
                return number  # a dotted key inside the target: `criteria.x.margin = 0.05`
            continue
        if list(table) == target[: len(table)]:
            best = number
    return best


# --- prompts CSV ----------------------------------------------------------------------------


def _parse_prompts(data: bytes, name: str, problems: list[Problem]) -> list[PromptRow]:
    try:
        text = decode_utf8(data, name)
    except StudyFileError as exc:
        problems.extend(exc.problems)
        return []
    problems.extend(_refused_in_csv(text, name))
    try:
        records = list(_csv_records(text, name))
    except StudyFileError as exc:
        problems.extend(exc.problems)
        return []
    if not records or not any(records[0][1]):
        problems.append(Problem(name, 1, 1, "empty file: expected a header 'prompt,theme,seed'"))
        return []
    header_line, header = records[0]
    columns = _check_header(header, header_line, text, name, problems)
    if columns is None:
        return []
    rows: list[PromptRow] = []
    first_seen: dict[str, int] = {}
    for line, fields in records[1:]:
        if not any(f.strip() for f in fields):
            continue  # blank line
        if any(first_refused(f, allow="\t\n\r") is not None for f in fields):
            continue  # reported by _refused_in_csv, where the character is
        row = _parse_row(line, fields, columns, text, name, problems)
        if row is None:
            continue
        key = " ".join(row.text.casefold().split())
        if key in first_seen:
            problems.append(
                Problem(name, line, 1, f"duplicate prompt (same as line {first_seen[key]})")
            )
            continue
        first_seen[key] = line
        rows.append(row)
    if not rows and not problems:
        problems.append(Problem(name, 2, 1, "no prompts: add at least one row under the header"))
    if len(rows) > MAX_PROMPTS:
        problems.append(Problem(name, 1, 1, f"{len(rows)} prompts; the limit is {MAX_PROMPTS}"))
    return rows


def _refused_in_csv(text: str, name: str) -> list[Problem]:
    """A problem at the first refused character of each line of a CSV (tab and line breaks are
    fine: cells are single lines once their whitespace is collapsed); after MAX_REFUSED_LINES
    lines, a count of the rest."""
    problems: list[Problem] = []
    if first_refused(text, allow="\t\n\r") is None:
        return problems
    for number, row in enumerate(text.split("\n"), start=1):
        index = first_refused(row, allow="\t\r")
        if index is None:
            continue
        if len(problems) == MAX_REFUSED_LINES:
            rest = sum(
                first_refused(r, allow="\t\r") is not None for r in text.split("\n")[number - 1 :]
            )
            problems.append(Problem(name, number, 1, f"and {plural(rest, 'more line')} like these"))
            break
        problems.append(Problem(name, number, index + 1, refusal(row[index], multiline=True)))
    return problems


def _csv_records(text: str, name: str) -> Any:
    """Yield (first line number, fields) per CSV record; quoted fields may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    try:
        for fields in reader:
            yield start, fields
            start = reader.line_num + 1
    except csv.Error as exc:
        problem = Problem(name, reader.line_num, 1, f"malformed CSV: {exc}")
        raise StudyFileError([problem]) from exc


def _check_header(
    header: list[str], line: int, text: str, name: str, problems: list[Problem]
) -> dict[str, int] | None:
    names = [h.strip().lower() for h in header]
    offsets = _field_offsets(text.splitlines()[line - 1] if text else "")
    before = len(problems)
    for index, column in enumerate(names):
        col = offsets[index] if index < len(offsets) else 1
        if column not in PROMPT_COLUMNS:
            allowed = ", ".join(PROMPT_COLUMNS)
            message = f"unknown column {header[index]!r}: allowed are {allowed}"
            problems.append(Problem(name, line, col, message))
        elif names.index(column) != index:
            problems.append(Problem(name, line, col, f"duplicate column {column!r}"))
    for required in REQUIRED_COLUMNS:
        if required not in names:
            problems.append(Problem(name, line, 1, f"missing column {required!r} in the header"))
    if len(problems) > before:
        return None
    return {column: index for index, column in enumerate(names)}


def _parse_row(
    line: int,
    fields: list[str],
    columns: dict[str, int],
    text: str,
    name: str,
    problems: list[Problem],
) -> PromptRow | None:
    offsets = _field_offsets(text.splitlines()[line - 1])
    if len(fields) != len(columns):
        expected = f"{len(columns)} ({', '.join(columns)})"
        message = f"{len(fields)} fields, expected {expected}; quote fields that contain commas"
        problems.append(Problem(name, line, 1, message))
        return None

    def col(column: str) -> int:
        index = columns[column]
        return offsets[index] if index < len(offsets) else 1

    before = len(problems)
    prompt = " ".join(fields[columns["prompt"]].split())
    theme = " ".join(fields[columns["theme"]].split())
    if not prompt:
        problems.append(Problem(name, line, col("prompt"), "prompt is empty"))
    elif len(prompt) > MAX_PROMPT_CHARS:
        message = f"prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}"
        problems.append(Problem(name, line, col("prompt"), message))
    if not theme:
        problems.append(Problem(name, line, col("theme"), "theme is empty"))
    elif len(theme) > MAX_THEME_CHARS:
        message = f"theme is {len(theme)} characters; the limit is {MAX_THEME_CHARS}"
        problems.append(Problem(name, line, col("theme"), message))
    seed = _parse_seed(fields, columns, prompt)
    if isinstance(seed, str):
        problems.append(Problem(name, line, col("seed"), seed))
    if len(problems) > before or isinstance(seed, str):
        return None
    return PromptRow(line=line, text=prompt, theme=theme, seed=seed)


def _parse_seed(fields: list[str], columns: dict[str, int], prompt: str) -> int | str:
    """The row's seed, a seed derived from the prompt text when blank, or an error message."""
    raw = fields[columns["seed"]].strip() if "seed" in columns else ""
    if not raw:
        # Reproducible without a seed column: the same prompt always gets the same seed.
        return int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big") & 0x7FFFFFFF
    if not re.fullmatch(r"\d+", raw):
        return f"seed {raw!r} is not a whole number in 0..4294967295"
    seed = int(raw)
    if seed >= 2**32:
        return f"seed {seed} is out of range 0..4294967295"
    return seed


def _field_offsets(line: str) -> list[int]:
    """1-based column where each CSV field starts on a single physical line (quote-aware)."""
    offsets = [1]
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            offsets.append(index + 2)
    return offsets
