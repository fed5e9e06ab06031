"""Study file and prompts CSV validation: every problem with file, line and column."""

from __future__ import annotations

import pytest

from app.studies.studyfile import StudyFileError, load_study_file, parse_study
from tests.kit.paths import EXAMPLE_STUDY
from tests.kit.studies import SMALL_PROMPTS_CSV, SMALL_STUDY_TOML

TOML = SMALL_STUDY_TOML.format(slug="s")


def problems(toml: str = TOML, csv: bytes | str = SMALL_PROMPTS_CSV) -> list[str]:
    data = csv.encode() if isinstance(csv, str) else csv
    with pytest.raises(StudyFileError) as info:
        parse_study(
            toml_text=toml, toml_name="study.toml", prompts_bytes=data, prompts_name="p.csv"
        )
    return [str(p) for p in info.value.problems]


def test_example_study_is_valid():
    draft = load_study_file(EXAMPLE_STUDY)
    assert len(draft.prompts) == 100
    assert len(draft.themes) >= 10
    assert len({p.text for p in draft.prompts}) == 100
    assert [a.kind for a in draft.arms] == ["animatediff", "animatediff-lightning"]
    assert [c.key for c in draft.criteria][-1] == "overall_quality"


def test_small_study_inherits_render_settings():
    draft = parse_study(
        toml_text=TOML,
        toml_name="study.toml",
        prompts_bytes=SMALL_PROMPTS_CSV.encode(),
        prompts_name="p.csv",
    )
    assert {(a.num_frames, a.width, a.fps) for a in draft.arms} == {(4, 64, 8)}
    assert len(draft.criteria) == 6


@pytest.mark.parametrize(
    ("csv", "expected"),
    [
        ("prompt,theme,seed\n,nature,1\n", "p.csv:2:1: prompt is empty"),
        (
            "prompt,theme,seed\n" + "x" * 1001 + ",nature,1\n",
            "p.csv:2:1: prompt is 1001 characters",
        ),
        ("prompt,theme\na cat,pets\nA  cat,pets\n", "p.csv:3:1: duplicate prompt (same as line 2)"),
        ("prompt,theme,colour\na,b,c\n", "p.csv:1:14: unknown column 'colour'"),
        ("prompt,seed\na,1\n", "p.csv:1:1: missing column 'theme'"),
        ("prompt,theme,seed\na cat,pets,-3\n", "p.csv:2:12: seed '-3' is not a whole number"),
        (
            "prompt,theme,seed\na cat,pets,4294967296\n",
            "p.csv:2:12: seed 4294967296 is out of range",
        ),
        ("prompt,theme,seed\na cat,,1\n", "p.csv:2:7: theme is empty"),
        ("prompt,theme,seed\na, cat,pets,1\n", "p.csv:2:1: 4 fields, expected 3"),
        ("", "p.csv:1:1: empty file"),
        ("prompt,theme\n", "p.csv:2:1: no prompts"),
    ],
)
def test_prompt_csv_problems_name_line_and_column(csv, expected):
    found = problems(csv=csv)
    assert any(p.startswith(expected) for p in found), found


def test_bad_encoding_names_the_byte():
    found = problems(csv=b"prompt,theme\ncaf\xe9 scene,food\n")
    assert found == ["p.csv:2:4: not valid UTF-8 (byte 0xe9); save the file as UTF-8"]


def test_quoted_fields_may_hold_commas_and_newlines():
    csv = 'prompt,theme\n"a fox, running",wildlife\n"two\nlines",x\nlast one,y\n'
    draft = parse_study(
        toml_text=TOML, toml_name="study.toml", prompts_bytes=csv.encode(), prompts_name="p.csv"
    )
    assert [p.text for p in draft.prompts] == ["a fox, running", "two lines", "last one"]
    assert [p.line for p in draft.prompts] == [2, 3, 5]


def test_every_problem_is_reported_at_once():
    toml = TOML.replace('kind = "animatediff-lightning"', 'kind = "sora"').replace(
        "steps = 2\n", ""
    )
    found = problems(toml=toml, csv="prompt,theme\n,x\n")
    assert any("arms.1.kind: unknown pipeline kind 'sora'" in p for p in found), found
    assert any("arms.0.steps: missing required field" in p for p in found), found
    assert any(p.startswith("p.csv:2:1: prompt is empty") for p in found), found


def test_toml_syntax_error_has_line_and_column():
    found = problems(toml='name = "x"\nprompts = \n')
    assert found[0].startswith("study.toml:2:")
    assert "invalid TOML" in found[0]


def test_unknown_field_points_at_its_line():
    toml = TOML.replace("guidance_scale = 7.5", "guidance_scale = 7.5\nguidence = 3")
    found = problems(toml=toml)
    line = toml.splitlines().index("guidence = 3") + 1
    assert f"study.toml:{line}:1: arms.0.guidence: unknown field" in found[0]


def test_lightning_needs_a_published_step_count():
    toml = TOML.replace("steps = 1\n", "steps = 3\n")
    found = problems(toml=toml)
    assert any("checkpoints for steps (1, 2, 4, 8), not 3" in p for p in found), found


def test_duplicate_arm_names_are_refused():
    toml = TOML.replace('name = "fast"', 'name = "slow"')
    found = problems(toml=toml)
    assert any("duplicate arm name 'slow'" in p for p in found), found


def test_missing_prompts_file(tmp_path):
    study = tmp_path / "study.toml"
    study.write_text(TOML)
    with pytest.raises(StudyFileError, match=r"prompts file 'prompts\.csv' not found"):
        load_study_file(study)


def test_a_study_file_without_prompts_line_is_valid_beside_its_csv(tmp_path):
    toml = TOML.replace('prompts = "prompts.csv"\n', "")
    draft = parse_study(
        toml_text=toml,
        toml_name="study.toml",
        prompts_bytes=SMALL_PROMPTS_CSV.encode(),
        prompts_name="p.csv",
    )
    assert [p.text for p in draft.prompts] == ["a red fox running", "a city at night"]
    # Read from disk (the CLI) it must still say where its CSV is.
    study = tmp_path / "study.toml"
    study.write_text(toml)
    (tmp_path / "prompts.csv").write_text(SMALL_PROMPTS_CSV)
    with pytest.raises(StudyFileError, match=r"study\.toml:1:1: missing field 'prompts'"):
        load_study_file(study)


def test_name_errors_say_in_words_what_a_valid_name_is():
    toml = TOML.replace('name = "fast"', 'name = "Fast_Arm"').replace(
        'slug = "s"', 'slug = "Small Study"'
    )
    toml += '\n[[criteria]]\nkey = "Sharp-ness"\nlabel = "Sharpness"\nquestion = "Sharper?"\n'
    found = problems(toml=toml)
    assert not any("^" in p or "{0," in p for p in found), found  # no regular expression
    arm = next(p for p in found if "arms.1.name" in p)
    assert "'Fast_Arm' is not valid: use 1 to 63 lowercase letters, digits and hyphens" in arm
    assert any("slug: 'Small Study' is not valid: use 1 to 63 lowercase" in p for p in found)
    key = next(p for p in found if "criteria.0" in p)
    assert "lowercase letters, digits and underscores, starting with a letter" in key


def test_problems_are_listed_by_file_line_and_column():
    # [rating] written after the arms: pydantic reports fields in declaration order (rating
    # first); the CSV header's missing column (column 1) comes after its unknown one (column 8).
    toml = TOML.replace('kind = "animatediff"\n', 'kind = "sora"\n')
    toml += "\n[rating]\nrepeat_trials = -1\n"
    found = problems(toml=toml, csv="prompt,colour\na cat,red\n")
    where = [tuple(p.split(":")[:3]) for p in found]
    files = ["study.toml", "p.csv"]
    assert where == sorted(where, key=lambda w: (files.index(w[0]), int(w[1]), int(w[2]))), found
    assert [w[0] for w in where] == ["study.toml"] * 2 + ["p.csv"] * 2, found


# --- characters that are not text ------------------------------------------------------------

# Each refused character, with the name an error gives it.
HOSTILE = {
    "\x00": "U+0000 NULL",
    "\x07": "U+0007 ALERT",
    "\x1b": "U+001B ESCAPE",
    "\x7f": "U+007F DELETE",
    "\x85": "U+0085 (a C1 control character)",
    "\x9b": "U+009B (a C1 control character)",
    "\u061c": "U+061C ARABIC LETTER MARK",
    "\u200e": "U+200E LEFT-TO-RIGHT MARK",
    "\u200f": "U+200F RIGHT-TO-LEFT MARK",
    "\u202a": "U+202A LEFT-TO-RIGHT EMBEDDING",
    "\u202b": "U+202B RIGHT-TO-LEFT EMBEDDING",
    "\u202c": "U+202C POP DIRECTIONAL FORMATTING",
    "\u202d": "U+202D LEFT-TO-RIGHT OVERRIDE",
    "\u202e": "U+202E RIGHT-TO-LEFT OVERRIDE",
    "\u2066": "U+2066 LEFT-TO-RIGHT ISOLATE",
    "\u2067": "U+2067 RIGHT-TO-LEFT ISOLATE",
    "\u2068": "U+2068 FIRST STRONG ISOLATE",
    "\u2069": "U+2069 POP DIRECTIONAL ISOLATE",
    "\u2028": "U+2028 LINE SEPARATOR",
}
# Every text a study file holds that is shown or stored: (TOML key = value line, its location).
TOML_TEXTS = {
    "name": ('name = "Small study"', "name = \"Small {c}study\"", "name"),
    "description": (
        'name = "Small study"', 'name = "Small study"\ndescription = "x{c}y"', "description"
    ),
    "criterion label": (
        'name = "Small study"',
        'name = "Small study"\ncriteria = [{{ key = "k", label = "La{c}bel", question = "Q?" }}]',
        "criteria.0.label",
    ),
    "criterion question": (
        'name = "Small study"',
        'name = "Small study"\ncriteria = [{{ key = "k", label = "L", question = "Whi{c}ch?" }}]',
        "criteria.0.question",
    ),
    "arm name": ('name = "fast"', 'name = "fa{c}st"', "arms.1.name"),
    "negative prompt": (
        "guidance_scale = 7.5",
        'guidance_scale = 7.5\nnegative_prompt = "blu{c}rry"',
        "arms.0.negative_prompt",
    ),
    "completion code": (
        "guidance_scale = 1.0",
        'guidance_scale = 1.0\n[rating]\ncompletion_code = "AB{c}C"',
        "rating.completion_code",
    ),
}  # fmt: skip


def where_is(toml: str, marker: str = "\u2603") -> tuple[int, int]:
    """1-based line and column of `marker` in `toml`."""
    before = toml[: toml.index(marker)]
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


@pytest.mark.parametrize("field", list(TOML_TEXTS))
@pytest.mark.parametrize("char", list(HOSTILE), ids=[n.split()[0] for n in HOSTILE.values()])
def test_refused_characters_in_the_study_file_are_named_at_their_line_and_column(char, field):
    old, new, loc = TOML_TEXTS[field]
    # Written as a TOML escape (any character can be, NUL included) ...
    escaped = TOML.replace(old, new.format(c=f"\\u{ord(char):04X}"))
    line, column = where_is(TOML.replace(old, new.format(c="\u2603")))
    expected = f"study.toml:{line}:{column}: {loc}: {HOSTILE[char]} is not allowed here; remove it"
    found = problems(toml=escaped)
    assert len(found) == 1 and found[0].startswith(expected), found
    # ... or written as itself, which TOML forbids for control characters (tomllib says where).
    raw = TOML.replace(old, new.format(c=char))
    found = problems(toml=raw)
    name = HOSTILE[char]
    assert len(found) == 1 and found[0].startswith(f"study.toml:{line}:{column}: "), found
    assert f"{name} is not allowed here; remove it (" in found[0], found


def test_direction_controls_say_why_and_what_to_do():
    toml = TOML.replace('name = "Small study"', 'name = "Small \\u202Estudy"')
    assert problems(toml=toml) == [
        "study.toml:2:15: name: U+202E RIGHT-TO-LEFT OVERRIDE is not allowed here; remove it "
        "(direction controls can make text read backwards; right-to-left text needs none)"
    ]


def test_tabs_and_line_breaks_only_in_the_description():
    toml = TOML.replace(
        'name = "Small study"',
        'name = "Small study"\ndescription = """First line\n\tindented\\nthird"""',
    )
    draft = parse_study(
        toml_text=toml,
        toml_name="study.toml",
        prompts_bytes=SMALL_PROMPTS_CSV.encode(),
        prompts_name="p.csv",
    )
    assert draft.description == "First line\n\tindented\nthird"
    for text in ('"Small\\tstudy"', '"Small\\nstudy"', '"Small\tstudy"'):
        found = problems(toml=TOML.replace('"Small study"', text))
        assert len(found) == 1 and found[0].startswith("study.toml:2:14: name: U+000"), found
        assert "this text is one line; tabs and line breaks only in a description" in found[0]


def test_right_to_left_text_and_escaped_backslashes_are_fine():
    toml = TOML.replace('"Small study"', '"دراسة صغيرة \\\\u202E"')  # a backslash, then text
    csv = "prompt,theme\nقطة تجري في الحديقة,حيوانات\n"
    draft = parse_study(
        toml_text=toml, toml_name="study.toml", prompts_bytes=csv.encode(), prompts_name="p.csv"
    )
    assert draft.name == "دراسة صغيرة \\u202E"
    assert [(p.text, p.theme) for p in draft.prompts] == [("قطة تجري في الحديقة", "حيوانات")]


def test_a_refused_key_is_named_with_an_escape():
    found = problems(toml=TOML + '\n"evil\\u001b[2J" = 1\n')
    line = TOML.count("\n") + 2
    assert found == [
        f"study.toml:{line}:6: arms.1.evil\\x1b[2J: U+001B ESCAPE is not allowed here; remove it "
        "(control characters are not text)"
    ], found
    assert not any("\x1b" in p for p in found)  # quoted back as an escape, never raw


@pytest.mark.parametrize("column_name", ["prompt", "theme", "seed"])
@pytest.mark.parametrize("char", list(HOSTILE), ids=[n.split()[0] for n in HOSTILE.values()])
def test_refused_characters_in_the_prompts_csv_are_named_at_their_line_and_column(
    char, column_name
):
    cells = {"prompt": "a red fox", "theme": "wildlife", "seed": "12"}
    cells[column_name] = cells[column_name][:1] + char + cells[column_name][1:]
    row = ",".join(cells.values())
    csv = f"prompt,theme,seed\na city at night,urban,2\n{row}\n"
    column = row.index(char) + 1
    found = problems(csv=csv)
    expected = f"p.csv:3:{column}: {HOSTILE[char]} is not allowed here; remove it ("
    assert len(found) == 1 and found[0].startswith(expected), found


def test_a_prompt_may_span_lines_and_hold_tabs():
    csv = 'prompt,theme\n"a fox\trunning\r\nin snow",wild\r\n'
    draft = parse_study(
        toml_text=TOML, toml_name="study.toml", prompts_bytes=csv.encode(), prompts_name="p.csv"
    )
    assert [p.text for p in draft.prompts] == ["a fox running in snow"]


def test_a_binary_file_as_prompts_lists_twenty_lines_and_counts_the_rest():
    csv = "prompt,theme\n" + "".join(f"p{i}\x1b[0m,t\n" for i in range(30))
    found = problems(csv=csv)
    assert len(found) == 21
    assert found[0].startswith("p.csv:2:3: U+001B ESCAPE is not allowed here")
    assert found[20] == "p.csv:22:1: and 10 more lines like these"
