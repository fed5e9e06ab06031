"""Wording shared by pages, flash messages and the CLI (no web or database imports).

Also the one rule for which characters a text that people write may hold: control characters
(NUL, ESC, DEL and the other C0 and C1 controls) and bidirectional controls (overrides, embeddings,
isolates, direction marks) are refused wherever text enters, because they make a label read
backwards on a page, break PostgreSQL (NUL) or move a terminal's cursor. Tab and newline are
allowed only where a text has lines (a description).
"""

from __future__ import annotations

import unicodedata


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """`1 prompt`, `2 prompts`, `0 prompts`; irregular nouns pass their plural form."""
    word = noun if count == 1 else plural_form or f"{noun}s"
    return f"{count} {word}"


# Unicode's names of the C0 controls (unicodedata has none for category Cc).
_C0_NAMES = (
    "NULL", "START OF HEADING", "START OF TEXT", "END OF TEXT", "END OF TRANSMISSION", "ENQUIRY",
    "ACKNOWLEDGE", "ALERT", "BACKSPACE", "CHARACTER TABULATION", "LINE FEED", "LINE TABULATION",
    "FORM FEED", "CARRIAGE RETURN", "SHIFT OUT", "SHIFT IN", "DATA LINK ESCAPE",
    "DEVICE CONTROL ONE", "DEVICE CONTROL TWO", "DEVICE CONTROL THREE", "DEVICE CONTROL FOUR",
    "NEGATIVE ACKNOWLEDGE", "SYNCHRONOUS IDLE", "END OF TRANSMISSION BLOCK", "CANCEL",
    "END OF MEDIUM", "SUBSTITUTE", "ESCAPE", "INFORMATION SEPARATOR FOUR",
    "INFORMATION SEPARATOR THREE", "INFORMATION SEPARATOR TWO", "INFORMATION SEPARATOR ONE",
)  # fmt: skip
# Characters that change the direction of the text around them.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
LINE_SEPARATORS = frozenset("\u2028\u2029")
# Allowed in texts that have lines (a study's description); refused everywhere else.
MULTILINE = "\t\n"


def is_refused(char: str, *, allow: str = "") -> bool:
    """Whether a text people write may not hold `char` (one character)."""
    if char in allow:
        return False
    category = unicodedata.category(char)
    # Cc: C0, DEL, C1. Cs: a lone surrogate (JSON's "\ud800"), not text, and not encodable.
    return category in ("Cc", "Cs") or char in BIDI_CONTROLS or char in LINE_SEPARATORS


def first_refused(text: str, *, allow: str = "") -> int | None:
    """The index of the first refused character of `text`, None when there is none."""
    for index, char in enumerate(text):
        if is_refused(char, allow=allow):
            return index
    return None


def char_name(char: str) -> str:
    """`U+202E RIGHT-TO-LEFT OVERRIDE`, `U+0000 NULL`, `U+009B (a C1 control character)`."""
    code = ord(char)
    if code < 0x20:
        name = _C0_NAMES[code]
    elif code == 0x7F:
        name = "DELETE"
    elif 0x80 <= code < 0xA0:
        name = "(a C1 control character)"
    elif unicodedata.category(char) == "Cs":
        name = "(half of a surrogate pair, not a character)"
    else:
        name = unicodedata.name(char, "(unnamed)")
    return f"U+{code:04X} {name}"


def refusal(char: str, *, multiline: bool = False) -> str:
    """Why `char` is refused and what to do: the message every input path shows."""
    if char in BIDI_CONTROLS:
        why = "direction controls can make text read backwards; right-to-left text needs none"
    elif char in LINE_SEPARATORS:
        why = "use an ordinary line break where the text may have lines"
    elif char in "\t\n\r" and not multiline:
        why = "this text is one line; tabs and line breaks only in a description"
    else:
        why = "control characters are not text"
    return f"{char_name(char)} is not allowed here; remove it ({why})"


def visible(text: str, *, keep: str = "") -> str:
    """`text` safe to print on a terminal: each refused character (except those in `keep`) as a
    visible escape such as `\\x1b` or `\\u202e`, so a stored name cannot move the cursor, clear
    the screen or reverse the line it is printed on."""
    if first_refused(text, allow=keep) is None:
        return text
    return "".join(_escape(c) if is_refused(c, allow=keep) else c for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
