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
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
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
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDARENA_")}
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


def stop_group(process: subprocess.Popen[str]) -> None:
    """Stop the demo and its render worker (one process group), and wait until both are gone:
    a worker finishing its clip would otherwise write into a folder being removed."""
    os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    try:
        process.wait(timeout=30)
        while time.monotonic() < deadline:
            os.killpg(process.pid, 0)  # raises once no process of the group is left
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait()


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
    joined = request(f"{base}/r/{key}/api/join", {"invite": invite})
    headers = {"Authorization": f"Bearer {joined['evaluator_token']}"}
    while True:
        answer = request(f"{base}/r/{key}/api/next", headers=headers)
        if answer["status"] == "trial":
            return elapsed()
        if answer["status"] == "done":
            raise SystemExit(f"the evaluator was sent away: {answer}")
        elapsed()
        time.sleep(0.2)


def request(url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.load(response)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
