"""`vidarena demo` (what `make run` calls): its study is the example study made small, and a
real run serves a ratable pair soon after the server is up."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.cli import DEMO_STUDY
from app.studies.studyfile import load_study_file
from tests.kit.config import env_without_vidarena
from tests.kit.paths import EXAMPLE_STUDY
from tests.kit.servers import answers, get_json, stop_group
from tests.kit.services import free_port

LINK = re.compile(r"http://\S+/r/([^?\s]+)\?invite=(\S+)")


def test_the_demo_study_is_the_example_study_made_small():
    demo, example = load_study_file(DEMO_STUDY), load_study_file(EXAMPLE_STUDY)
    assert demo.slug != example.slug  # both can live in one database
    assert (demo.criteria, demo.rating) == (example.criteria, example.rating)
    # The same arms (pipelines, steps, guidance, schedulers) at fewer frames.
    assert [a.num_frames for a in demo.arms] == [8, 8]
    assert [a.model_copy(update={"num_frames": 16}) for a in demo.arms] == example.arms
    # The first and the last prompt of every theme, with their seeds.
    by_theme: dict[str, list] = {}
    for prompt in example.prompts:
        by_theme.setdefault(prompt.theme, []).append(prompt)
    expected = [p for prompts in by_theme.values() for p in (prompts[0], prompts[-1])]
    assert [(p.text, p.theme, p.seed) for p in demo.prompts] == [
        (p.text, p.theme, p.seed) for p in expected
    ]
    assert len(demo.prompts) == 20


@pytest.mark.slow
def test_demo_opens_its_study_and_renders_the_first_pair_first(tmp_path: Path):
    port = free_port()
    env = env_without_vidarena()
    env.update(VIDARENA_VAR_DIR=str(tmp_path / "var"), HF_HUB_OFFLINE="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "demo", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()  # type: ignore[arg-type]
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # generous: the machine may be busy
    try:
        while not answers(f"{base}/healthz"):
            assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        key, invite = next(m.groups() for line in lines if (m := LINK.search(line)))
        token = get_json(f"{base}/r/{key}/api/join", {"invite": invite})["evaluator_token"]
        while (answer := get_json(f"{base}/r/{key}/api/next", token=token))["status"] != "trial":
            assert answer["status"] == "waiting", answer  # kept, not sent away
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        database = tmp_path / "var" / "vidarena.sqlite"
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
            study = conn.execute("SELECT slug, status FROM study").fetchall()
            clips = conn.execute("SELECT count(*) FROM clip").fetchone()[0]
            first_done = conn.execute(
                "SELECT prompt.position FROM clip JOIN prompt ON prompt.id = clip.prompt_id "
                "WHERE clip.status = 'done' ORDER BY clip.finished_at LIMIT 2"
            ).fetchall()
    finally:
        stop_group(process, timeout=60)
    assert study == [("lightning-vs-animatediff-demo", "open")]
    assert clips == 40
    assert first_done == [(1,), (1,)]  # both clips of the first prompt came first
