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


def tracked_text_files() -> list[Path]:
    import subprocess

    root = Path(__file__).resolve().parent.parent
    names = subprocess.run(
        ["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    suffixes = {".py", ".md", ".html", ".js", ".css", ".toml", ".yml", ".ini", ".txt", ""}
    return [root / n for n in names if Path(n).suffix in suffixes and (root / n).is_file()]


def test_nothing_cites_a_document_outside_the_repository():
    # What the code and docs rely on lives in docs/, not in a design brief nobody else has.
    outside = re.compile(r"\bDESIGN\.md\b|\.\./shared/")
    citing = [
        str(p)
        for p in tracked_text_files()
        if p.name != "test_docs.py" and outside.search(p.read_text(errors="replace"))
    ]
    assert not citing, f"files citing documents outside the repository: {citing}"


def test_relative_links_in_markdown_resolve():
    root = Path(__file__).resolve().parent.parent
    broken = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(root)} -> {target}")
    assert not broken, f"broken links: {broken}"
