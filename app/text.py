"""Wording shared by pages, flash messages and the CLI (no web or database imports)."""

from __future__ import annotations


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """`1 prompt`, `2 prompts`, `0 prompts`; irregular nouns pass their plural form."""
    word = noun if count == 1 else plural_form or f"{noun}s"
    return f"{count} {word}"
