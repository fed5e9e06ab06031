"""How long a newcomer waits: `vidarena demo` (what `make run` calls) timed end to end.

Runs the real command in a fresh folder (its own ./var: SQLite, embedded broker, media and tiny
models, so the tiny models are built too, as on a first `make run`), then

- polls `GET /healthz` until the server answers: "server up";
- joins with the first rating link the demo printed and polls the evaluator API's `next` until it
  answers a trial: "first ratable pair", as an evaluator sees it;
- reads the clip rows until none is queued or rendering: "whole demo study rendered".

    .venv/bin/python benchmarks/demo.py [--timeout 3600] [--keep] [--first-pair-only] [--timeline]

Times are seconds from the command's start; the figures that matter are printed from "server
up" on. Nothing is downloaded (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.kit.config import env_without_vidarena
from tests.kit.paths import ROOT
from tests.kit.servers import answers, get_json, stop_group
from tests.kit.services import free_port

LINK = re.compile(r"(http://\S+/r/([^?\s]+)\?invite=(\S+))")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=3600, help="Give up after this long.")
    parser.add_argument("--keep", action="store_true", help="Keep the run's folder.")
    parser.add_argument(
        "--first-pair-only", action="store_true", help="Stop once the first pair is ratable."
    )
    parser.add_argument(
        "--timeline", action="store_true", help="Also print where the time went (stderr)."
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="vidarena-demo-"))
    try:
        result = run_demo(
            folder,
            timeout=args.timeout,
            whole_study=not args.first_pair_only,
            timeline=args.timeline,
        )
        print(json.dumps(result, indent=2))
    finally:
        if args.keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def run_demo(
    folder: Path, *, timeout: float, whole_study: bool = True, timeline: bool = False
) -> dict[str, Any]:
    port = free_port()
    env = env_without_vidarena()
    env.update(VIDARENA_VAR_DIR=str(folder / "var"), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    started, wall_start = time.monotonic(), datetime.now(UTC)
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "demo", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    events: list[tuple[float, str]] = []

    def read_output() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.append(line)
            events.append((time.monotonic() - started, line.rstrip()))

    threading.Thread(target=read_output, daemon=True).start()
    base = f"http://127.0.0.1:{port}"

    def elapsed() -> float:
        if process.poll() is not None:
            raise SystemExit("vidarena demo exited:\n" + "".join(lines))
        if time.monotonic() - started > timeout:
            raise SystemExit(f"gave up after {timeout:.0f} s")
        return time.monotonic() - started

    try:
        while not answers(f"{base}/healthz"):
            elapsed()
            time.sleep(0.1)
        server_up = elapsed()
        events.append((server_up, "** server up"))
        link = next(m for line in lines if (m := LINK.search(line)))
        first_pair = wait_for_first_pair(base, key=link[2], invite=link[3], elapsed=elapsed)
        events.append((first_pair, "** first ratable pair"))
        database = folder / "var" / "vidarena.sqlite"
        result = {
            "server_up_s": round(server_up, 1),
            "first_ratable_pair_after_server_up_s": round(first_pair - server_up, 1),
        }
        if not whole_study:
            if timeline:
                print_timeline(events, database, wall_start)
            return result
        while (counts := clip_counts(database)).get("queued", 0) + counts.get("rendering", 0):
            elapsed()
            time.sleep(1)
        all_done = elapsed()
        if timeline:
            print_timeline(events, database, wall_start)
        return {
            **result,
            "whole_study_after_server_up_s": round(all_done - server_up, 1),
            "clips": counts,
            "median_render_s_per_arm": median_seconds(database),
            "cpus": os.cpu_count(),
        }
    finally:
        stop_group(process)


def print_timeline(events: list[tuple[float, str]], database: Path, wall_start: datetime) -> None:
    """The demo's output and the first clips' claim and finish times, in seconds from start."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as conn:
        rows = conn.execute(
            "SELECT clip.id, arm.name, clip.started_at, clip.finished_at, clip.telemetry "
            "FROM clip JOIN arm ON arm.id = clip.arm_id WHERE clip.started_at IS NOT NULL "
            "ORDER BY clip.started_at LIMIT 4"
        ).fetchall()

    def since_start(stamp: str) -> float:
        return (datetime.fromisoformat(stamp).replace(tzinfo=UTC) - wall_start).total_seconds()

    for clip_id, arm, claimed, finished, telemetry in rows:
        events.append((since_start(claimed), f"** clip {clip_id} ({arm}) claimed"))
        if finished:
            load = json.loads(telemetry).get("load_s", 0)
            events.append((since_start(finished), f"** clip {clip_id} done (load_s {load})"))
    for at, text in sorted(events):
        print(f"{at:7.1f} s  {text[:110]}", file=sys.stderr)


def wait_for_first_pair(base: str, *, key: str, invite: str, elapsed) -> float:  # type: ignore[no-untyped-def]
    """Join as an evaluator, then ask for the next trial until there is one."""
    joined = get_json(f"{base}/r/{key}/api/join", {"invite": invite})
    headers = {"Authorization": f"Bearer {joined['evaluator_token']}"}
    while True:
        answer = get_json(f"{base}/r/{key}/api/next", headers=headers)
        if answer["status"] == "trial":
            return elapsed()
        if answer["status"] == "done":
            raise SystemExit(f"the evaluator was sent away: {answer}")
        elapsed()
        time.sleep(0.2)


def clip_counts(database: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM clip GROUP BY status").fetchall())


def median_seconds(database: Path) -> dict[str, float]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as conn:
        rows = conn.execute(
            "SELECT arm.name, clip.telemetry FROM clip JOIN arm ON arm.id = clip.arm_id "
            "WHERE clip.status = 'done'"
        ).fetchall()
    seconds: dict[str, list[float]] = {}
    for arm, telemetry in rows:
        seconds.setdefault(arm, []).append(json.loads(telemetry)["total_s"])
    return {arm: round(statistics.median(s), 2) for arm, s in sorted(seconds.items())}


if __name__ == "__main__":
    main()
