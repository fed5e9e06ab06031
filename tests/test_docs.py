"""The README is the contract with a new user: every setting and command must be in it."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from app.cli import app as cli_app
from app.config import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def command_paths(group: typer.Typer, prefix: str = "vidarena") -> list[str]:
    click_group = typer.main.get_command(group)
    paths: list[str] = []

    def walk(command, path: str) -> None:  # type: ignore[no-untyped-def]
        subcommands = getattr(command, "commands", None)
        if not subcommands:
            paths.append(path)
            return
        for name, sub in subcommands.items():
            walk(sub, f"{path} {name}")

    walk(click_group, prefix)
    return paths


def test_every_setting_is_documented():
    missing = [
        f"VIDARENA_{name.upper()}"
        for name in Settings.model_fields
        if f"`VIDARENA_{name.upper()}`" not in README
    ]
    assert not missing, f"settings missing from README.md's configuration table: {missing}"


def test_every_cli_command_is_documented():
    paths = command_paths(cli_app)
    assert "vidarena study create" in paths
    missing = [p for p in paths if not re.search(rf"`{re.escape(p)}\b", README)]
    assert not missing, f"commands missing from README.md: {missing}"


def test_every_command_has_help():
    for path in command_paths(cli_app):
        command = typer.main.get_command(cli_app)
        for name in path.split()[1:]:
            command = command.commands[name]
        assert command.help and len(command.help) > 15, f"{path} needs a helpful --help"


def test_readme_quick_start_commands_exist_in_makefile():
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    for target in ("run", "test"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, re.M)
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "make test" in ci
