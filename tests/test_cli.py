"""The `vidarena` command line, run as a user runs it: a real process on a real database."""

from __future__ import annotations

import shutil
import subprocess

import sqlalchemy as sa

from tests.kit.cli import VIDARENA, run
from tests.kit.paths import EXAMPLE_STUDY


def count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_study_create_prints_the_slug_and_stores_the_study(database_url, engine, tmp_path):
    result = run("study", "create", str(EXAMPLE_STUDY), database_url=database_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "lightning-vs-animatediff"
    assert "2 arms, 100 prompts, 10 themes" in result.stderr
    assert count(engine, "prompt") == 100
    assert count(engine, "arm") == 2
    assert count(engine, "clip") == 200

    listed = run("study", "list", database_url=database_url, cwd=tmp_path)
    assert "lightning-vs-animatediff" in listed.stdout
    assert "draft" in listed.stdout

    again = run("study", "create", str(EXAMPLE_STUDY), database_url=database_url, cwd=tmp_path)
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert count(engine, "study") == 1


def test_broken_prompts_csv_names_the_line_and_creates_nothing(database_url, engine, tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(EXAMPLE_STUDY.parent, folder)
    lines = (folder / "prompts.csv").read_text().splitlines()
    lines[41] = ',"nature",7'  # line 42 of the file: an empty prompt
    (folder / "prompts.csv").write_text("\n".join(lines) + "\n")
    result = run(
        "study", "create", str(folder / "study.toml"), database_url=database_url, cwd=tmp_path
    )
    assert result.returncode == 2
    assert "prompts.csv:42:1: prompt is empty" in result.stderr
    assert "nothing was created" in result.stderr
    assert count(engine, "study") == 0
    assert count(engine, "prompt") == 0


def test_render_queues_every_clip_and_moves_a_draft_to_rendering(database_url, engine, tmp_path):
    run("study", "create", str(EXAMPLE_STUDY), database_url=database_url, cwd=tmp_path)
    result = run(
        "render", "lightning-vs-animatediff", "--tiny", database_url=database_url, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "queued 200 clip(s) of 'lightning-vs-animatediff' with tiny models" in result.stdout
    with engine.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM study")).scalar_one()
        queued = conn.execute(sa.text("SELECT count(*) FROM clip WHERE status = 'queued'"))
        assert (status, queued.scalar_one()) == ("rendering", 200)
    # One task per clip on the embedded broker under ./var, in the order queued.
    assert len(list((tmp_path / "var" / "broker" / "queue").iterdir())) == 200


def test_every_command_has_help(tmp_path):
    for args in (
        ["--help"],
        ["serve", "--help"],
        ["db", "upgrade", "--help"],
        ["study", "create", "--help"],
        ["study", "list", "--help"],
    ):
        result = subprocess.run([*VIDARENA, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "Usage" in result.stdout


def test_study_create_names_a_control_character_where_it_is_and_creates_nothing(
    database_url, engine, tmp_path
):
    folder = tmp_path / "study"
    shutil.copytree(EXAMPLE_STUDY.parent, folder)
    toml = folder / "study.toml"
    text = toml.read_text()
    name_line = next(line for line in text.splitlines() if line.startswith("name = "))
    toml.write_text(text.replace(name_line, 'name = "Lightning \\u202Evs AnimateDiff"'))
    lines = (folder / "prompts.csv").read_text().splitlines()
    lines[6] = "a fox \x1b[2Jin the snow,wildlife,7"  # line 7: a terminal escape in a prompt
    (folder / "prompts.csv").write_text("\n".join(lines) + "\n")
    result = run("study", "create", str(toml), database_url=database_url, cwd=tmp_path)
    assert result.returncode == 2
    line = text.splitlines().index(name_line) + 1
    assert (
        f"study.toml:{line}:19: name: U+202E RIGHT-TO-LEFT OVERRIDE is not allowed here; "
        "remove it (direction controls can make text read backwards" in result.stderr
    )
    assert "prompts.csv:7:7: U+001B ESCAPE is not allowed here; remove it" in result.stderr
    assert "\x1b" not in result.stderr.replace("\x1b[31m", "").replace("\x1b[0m", "")
    assert count(engine, "study") == 0
    assert count(engine, "prompt") == 0


def test_list_and_report_print_stored_control_characters_and_markup_as_escapes(
    database_url, engine, tmp_path
):
    from sqlalchemy.orm.attributes import flag_modified

    from app.db import session_factory
    from app.studies.models import Study

    assert run("study", "create", str(EXAMPLE_STUDY), database_url=database_url, cwd=tmp_path)
    # Written before such characters were refused: straight into the database.
    with session_factory(engine)() as session:
        study = session.query(Study).one()
        study.name = "\x1b[2J\x1b]0;owned\x07[bold red]Evil[/] \u202eydutS"
        study.criteria = [
            {**c, "label": "Motion \x1b[5m[blink]" + c["label"]} for c in study.criteria
        ]
        flag_modified(study, "criteria")
        session.commit()
    listed = run("study", "list", database_url=database_url, cwd=tmp_path)
    report = run("report", "lightning-vs-animatediff", database_url=database_url, cwd=tmp_path)
    for result in (listed, report):
        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout
        assert "\u202e" not in result.stdout
    name = "\\x1b[2J\\x1b]0;owned\\x07[bold red]Evil[/] \\u202eydutS"
    assert name in listed.stdout
    assert name in report.stdout.replace("\n", "")  # the table title may wrap
    assert "Motion \\x1b[5m[blink]Overall quality" in report.stdout  # markup printed as written
