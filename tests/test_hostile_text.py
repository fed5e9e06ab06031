"""Control and direction characters: the one rule (app/text.py) for which characters text people
write may hold, how refused ones are named and printed, and the clip importer's manifest cells."""

from __future__ import annotations

import unicodedata

import pytest
from sqlalchemy import select

from app.clips.importer import import_manifest
from app.clips.models import Clip, ClipStatus
from app.storage import get_storage
from app.studies.studyfile import StudyFileError
from app.text import char_name, first_refused, is_refused, visible
from tests.kit.clips import write_manifest
from tests.kit.media import encoded_gif_bytes
from tests.kit.studies import small_study


def test_every_control_character_and_direction_control_is_refused_and_nothing_else():
    refused = {chr(c) for c in range(0x110000) if is_refused(chr(c))}
    controls = {chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) in ("Cc", "Cs")}
    bidi = {unicodedata.lookup(name) for name in BIDI_NAMES}
    assert refused == controls | bidi | {"\u2028", "\u2029"}
    # Right-to-left letters, combining marks, emoji joiners and soft hyphens are text.
    for char in "\u05d0\u0627\u0301\u200d\u00ad\u200b\ufeff😀":
        assert not is_refused(char), char_name(char)
    assert first_refused("a\tb\nc", allow="\t\n") is None
    assert first_refused("a\tb\nc") == 1


BIDI_NAMES = [
    "ARABIC LETTER MARK",
    "LEFT-TO-RIGHT MARK",
    "RIGHT-TO-LEFT MARK",
    "LEFT-TO-RIGHT EMBEDDING",
    "RIGHT-TO-LEFT EMBEDDING",
    "POP DIRECTIONAL FORMATTING",
    "LEFT-TO-RIGHT OVERRIDE",
    "RIGHT-TO-LEFT OVERRIDE",
    "LEFT-TO-RIGHT ISOLATE",
    "RIGHT-TO-LEFT ISOLATE",
    "FIRST STRONG ISOLATE",
    "POP DIRECTIONAL ISOLATE",
]


def test_refused_characters_are_named_as_unicode_names_them():
    assert char_name("\x00") == "U+0000 NULL"
    assert char_name("\x1b") == "U+001B ESCAPE"
    assert char_name("\x1f") == "U+001F INFORMATION SEPARATOR ONE"
    assert char_name("\x7f") == "U+007F DELETE"
    assert char_name("\x9b") == "U+009B (a C1 control character)"
    assert char_name("\u202e") == "U+202E RIGHT-TO-LEFT OVERRIDE"
    # Unicode's aliases for the C0 controls, where Python has them.
    for code in range(0x20):
        name = char_name(chr(code)).split(" ", 1)[1]
        assert unicodedata.lookup(name) == chr(code), name


def test_visible_escapes_what_would_act_on_a_terminal():
    assert visible("plain [bold] text") == "plain [bold] text"
    assert visible("\x1b[2Jname\u202e\x00") == "\\x1b[2Jname\\u202e\\x00"
    assert visible("two\nlines\t", keep="\n") == "two\nlines\\x09"
    assert visible("a\ud800b") == "a\\ud800b"  # printable, where print() would raise


# --- the clip importer's manifest -------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "column", "cell", "name"),
    [
        # Was a ValueError ("embedded null byte") from the file system.
        (["a red fox running", "slow", "fox\x00.gif"], 27, "path", "U+0000 NULL"),
        (
            ["a red fox \u202erunning", "slow", "ok.gif"],
            11,
            "prompt",
            "U+202E RIGHT-TO-LEFT OVERRIDE",
        ),
        (["a red fox running", "sl\x1bow", "ok.gif"], 21, "arm", "U+001B ESCAPE"),
    ],
)
def test_manifest_cells_with_refused_characters_are_named_and_nothing_is_stored(
    row, column, cell, name, session, settings, tmp_path
):
    study = small_study(session)
    (tmp_path / "ok.gif").write_bytes(encoded_gif_bytes(1))
    manifest = write_manifest(tmp_path, [["a city at night", "fast", "ok.gif"], row])
    with pytest.raises(StudyFileError) as info:
        import_manifest(
            session=session, study=study, manifest=manifest, storage=get_storage(settings)
        )
    (problem,) = [str(p) for p in info.value.problems]
    assert problem.startswith(f"manifest.csv:3:{column}: {cell}: {name} is not allowed"), problem
    session.rollback()
    assert {c.status for c in session.scalars(select(Clip))} == {ClipStatus.pending}


def test_a_device_name_with_a_terminal_escape_is_refused(session, settings, tmp_path):
    study = small_study(session)
    (tmp_path / "ok.gif").write_bytes(encoded_gif_bytes(1))
    manifest = write_manifest(
        tmp_path,
        [["a city at night", "fast", "ok.gif", "12.5", "NVIDIA \x1b]0;owned\x07H100"]],
        header=("prompt", "arm", "path", "total_s", "device"),
    )
    with pytest.raises(StudyFileError) as info:
        import_manifest(
            session=session, study=study, manifest=manifest, storage=get_storage(settings)
        )
    assert [str(p) for p in info.value.problems] == [
        "manifest.csv:2:34: device 'NVIDIA \\x1b]0;owned\\x07H100': U+001B ESCAPE is not allowed "
        "here; remove it (control characters are not text)"
    ]
