"""Dashboard refresh and votes export at scale: 1M votes in a fresh SQLite database.

Seeds the example study (2 arms, 100 prompts in 10 themes, 6 criteria) with done clips carrying
render telemetry, ~3,300 evaluators and ~167k trials of 6 votes each (bulk inserts through the
DB-API's executemany), then measures on the embedded SQLite default:

* dashboard refresh: the live summary the SSE stream pushes (incremental SQL GROUP BY into the
  analysis count cube + every count-based statistic), after one new vote, median of many;
* the cold build of that summary (first request after start: one GROUP BY over all votes);
* the expensive statistics (prompt-cluster bootstrap, Krippendorff's alpha, evaluator quality);
* votes.csv export: 1M rows streamed from a server-side cursor, rows/s and peak RSS.

    .venv/bin/python benchmarks/analytics.py [--votes 1000000] [--keep DIR]

About two minutes on 2 CPU cores (most of it seeding).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, select, update

from app.clips.models import Clip, ClipStatus
from app.db import make_engine, session_factory
from app.rating import matchups as rating_matchups
from app.rating.models import Matchup
from app.studies.models import Arm, Study, StudyStatus
from tests.kit.db import fresh_database

TRIALS_PER_EVALUATOR = 20  # the example study's quota
REPEATS_PER_EVALUATOR = 2
# P(the fast arm wins a decisive vote) per criterion, and the tie rate: a plausible study.
FAST_WIN_RATE = {
    "video_text_relevance": 0.47,
    "appearance_distortion": 0.44,
    "appearance_aesthetics": 0.50,
    "motion_naturalness": 0.42,
    "motion_amplitude": 0.55,
    "overall_quality": 0.46,
}
TIE_RATE = 0.15
CARELESS_SHARE = 0.04  # evaluators answering too fast half the time (flagged trials)
FLAGGED_SHARE = {True: 0.5, False: 0.01}
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


# --- seeding ------------------------------------------------------------------------------------


def seed_study(engine: Engine) -> tuple[int, list[int], list[int]]:
    """The example study, open, clips done with telemetry, matchups made.
    Returns (study id, matchup ids, arm ids)."""
    from tests.kit.studies import example_study  # here: the export processes need none of it

    with session_factory(engine)() as session:
        study = example_study(session)
        study.status = StudyStatus.open
        study.rating = {
            **study.rating,
            "trials_per_evaluator": TRIALS_PER_EVALUATOR,
            "repeat_trials": REPEATS_PER_EVALUATOR,
        }
        session.flush()
        _finish_clips(session, study)
        rating_matchups.ensure_matchups(session=session, study=study)
        session.commit()
        matchups = list(session.scalars(select(Matchup.id).where(Matchup.study_id == study.id)))
        arms = list(session.scalars(select(Arm.id).where(Arm.study_id == study.id)))
        return study.id, matchups, arms


def _finish_clips(session: Any, study: Study) -> None:
    rng = random.Random(1)
    clips = session.execute(
        select(Clip.id, Arm.spec).join(Arm, Arm.id == Clip.arm_id).where(Arm.study_id == study.id)
    ).all()
    for clip_id, spec in clips:
        passes = spec["steps"] * (2 if spec["guidance_scale"] > 1 else 1)
        denoise = passes * 0.024 * rng.uniform(0.9, 1.2)
        session.execute(
            update(Clip)
            .where(Clip.id == clip_id)
            .values(
                status=ClipStatus.done,
                storage_key=f"{clip_id:064x}.gif",
                sha256=f"{clip_id:064x}",
                size_bytes=2_000_000 + rng.randrange(500_000),
                num_frames=16,
                width=512,
                height=512,
                duration_ms=2000,
                telemetry={
                    "load_s": 0.0,
                    "denoise_s": round(denoise, 4),
                    "decode_s": 0.04,
                    "encode_s": 0.3,
                    "total_s": round(denoise + 0.34, 4),
                    "denoiser_passes": passes,
                    "device": "cuda",
                    "device_name": "NVIDIA H100 80GB HBM3",
                    "peak_memory_bytes": 9_800_000_000 if passes > 8 else 7_400_000_000,
                    "peak_memory_kind": "cuda_max_allocated",
                    "torch_version": "2.13.0",
                    "diffusers_version": "0.42.0",
                },
            )
        )


def seed_votes(engine: Engine, *, votes: int, study_id: int, matchups: list[int]) -> int:
    """Evaluators, trials and votes, bulk-inserted in id order. Returns the votes written."""
    with session_factory(engine)() as session:
        criteria = session.get(Study, study_id).criterion_keys
        arm_of = dict(
            session.execute(
                select(Matchup.id, Matchup.arm_b_id).where(Matchup.study_id == study_id)
            ).all()
        )
    rng = random.Random(7)
    n_trials = -(-votes // len(criteria))
    per_evaluator = TRIALS_PER_EVALUATOR + REPEATS_PER_EVALUATOR
    n_evaluators = -(-n_trials // per_evaluator)
    start = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    seconds = 14 * 24 * 3600 / n_trials  # two weeks of fieldwork
    evaluators, trials, vote_rows = [], [], []
    trial_id = vote_id = 0
    for e in range(1, n_evaluators + 1):
        joined = start + timedelta(seconds=(e - 1) * per_evaluator * seconds)
        finished = joined + timedelta(seconds=per_evaluator * seconds + 30)
        done = trial_id + per_evaluator <= n_trials
        evaluators.append((
            e, study_id, f"bench{e:08d}", f"PID{e:07d}", joined.strftime(SQLITE_TIME),
            finished.strftime(SQLITE_TIME) if done else None, "BENCH" if done else None,
        ))  # fmt: skip
        careless = rng.random() < CARELESS_SHARE
        sample = rng.sample(matchups, min(TRIALS_PER_EVALUATOR, len(matchups)))
        shows = [(m, False) for m in sample] + [(m, True) for m in sample[:REPEATS_PER_EVALUATOR]]
        for position, (matchup, is_repeat) in enumerate(shows, start=1):
            if trial_id >= n_trials:
                break
            trial_id += 1
            shown = start + timedelta(seconds=trial_id * seconds)
            answered = shown + timedelta(seconds=rng.uniform(4, 30))
            flagged = rng.random() < FLAGGED_SHARE[careless]
            a_on_left = rng.random() < 0.5
            trials.append((
                trial_id, e, matchup, position, a_on_left, is_repeat,
                shown.strftime(SQLITE_TIME), shown.strftime(SQLITE_TIME),
                answered.strftime(SQLITE_TIME), flagged, "fast" if flagged else None,
            ))  # fmt: skip
            b_is_fast = arm_of[matchup] == max(arm_of.values())
            for criterion in criteria:
                vote_id += 1
                choice = _choice(rng, FAST_WIN_RATE[criterion], b_is_fast, a_on_left)
                vote_rows.append((vote_id, trial_id, criterion, choice))
    _bulk_insert(engine, evaluators, trials, vote_rows)
    return len(vote_rows)


def _choice(rng: random.Random, fast_rate: float, b_is_fast: bool, a_on_left: bool) -> str:
    if rng.random() < TIE_RATE:
        return "tie"
    fast_wins = rng.random() < fast_rate
    winner_is_a = fast_wins != b_is_fast
    return "left" if winner_is_a == a_on_left else "right"


def _bulk_insert(engine: Engine, evaluators: list, trials: list, votes: list) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO evaluator (id, study_id, public_id, external_id, created_at, "
            "completed_at, completion_code) VALUES (?, ?, ?, ?, ?, ?, ?)",
            evaluators,
        )
        conn.exec_driver_sql(
            "INSERT INTO trial (id, evaluator_id, matchup_id, position, a_on_left, is_repeat, "
            "assigned_at, shown_at, answered_at, flagged, flag_reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            trials,
        )
        conn.exec_driver_sql(
            "INSERT INTO vote (id, trial_id, criterion, choice) VALUES (?, ?, ?, ?)", votes
        )


# --- measuring ----------------------------------------------------------------------------------


def add_vote(engine: Engine, *, study_id: int, matchups: list[int], n: int) -> None:
    """One more answered trial (6 votes) by a new evaluator, as the rating flow writes it."""
    with engine.begin() as conn:
        top_e = conn.exec_driver_sql("SELECT max(id) FROM evaluator").scalar() + 1
        top_t = conn.exec_driver_sql("SELECT max(id) FROM trial").scalar() + 1
        top_v = conn.exec_driver_sql("SELECT max(id) FROM vote").scalar()
        last = conn.exec_driver_sql("SELECT max(answered_at) FROM trial").scalar()
        now = (datetime.fromisoformat(last) + timedelta(seconds=30)).strftime(SQLITE_TIME)
        conn.exec_driver_sql(
            "INSERT INTO evaluator (id, study_id, public_id, created_at) VALUES (?, ?, ?, ?)",
            (top_e, study_id, f"extra{n}", now),
        )
        conn.exec_driver_sql(
            "INSERT INTO trial (id, evaluator_id, matchup_id, position, a_on_left, is_repeat, "
            "assigned_at, shown_at, answered_at, flagged) VALUES (?, ?, ?, 1, 1, 0, ?, ?, ?, 0)",
            (top_t, top_e, matchups[n % len(matchups)], now, now, now),
        )
        conn.exec_driver_sql(
            "INSERT INTO vote (id, trial_id, criterion, choice) VALUES (?, ?, ?, ?)",
            [(top_v + i + 1, top_t, c, "left") for i, c in enumerate(FAST_WIN_RATE)],
        )


def measure_dashboard(
    engine: Engine, *, study_id: int, matchups: list[int]
) -> list[tuple[str, str]]:
    from app.dashboard import router as dashboard_router
    from app.dashboard import service
    from app.dashboard.schemas import Filters

    read = session_factory(engine, read_only=True)
    cache = service.DashboardCache()
    views = {
        "all votes": Filters(),
        "filtered": Filters(exclude_flagged_evaluators=True, exclude_ties=True, margin=5),
    }

    def refresh(filters: Filters, render: bool = False) -> Any:
        with read() as session:
            study = session.get(Study, study_id)
            d = service.live(session=session, study=study, filters=filters, cache=cache)
            return dashboard_router.render_live(d) if render else d

    cold, _ = timed(lambda: refresh(views["all votes"], render=True))
    rows = [
        ("cold start: build the tally (GROUP BY over every vote) + summary", f"{cold[0]:.2f} s")
    ]
    serial = 0
    for name, filters, render in (
        ("all votes", views["all votes"], False),
        ("flagged evaluators and ties excluded, 5 pp margin", views["filtered"], False),
        ("all votes, plus rendering the HTML the event stream pushes", views["all votes"], True),
    ):
        times = []
        for _ in range(15):
            serial += 1
            add_vote(engine, study_id=study_id, matchups=matchups, n=serial)
            times += timed(lambda f=filters, r=render: refresh(f, render=r))[0]
        rows.append((f"refresh after a new vote ({name}), median of 15", _ms(times)))
    with read() as session:
        study = session.get(Study, study_id)
        token, _ = timed(lambda: service.change_token(session=session, study=study), repeat=50)
        rows.append(("change check the stream polls every second, median of 50", _ms(token)))
        heavy, result = timed(
            lambda: service.advanced(
                session=session, study=study, filters=Filters(), cache=cache, fresh=True
            )
        )
        rows.append((
            f"robustness panel: load {result.n_votes:,} votes, 1,000-replicate prompt "
            "bootstrap, Krippendorff's alpha, evaluator quality (on request, cached)",
            f"{heavy[0]:.1f} s",
        ))  # fmt: skip
    return rows


def _ms(times: list[float]) -> str:
    return f"{statistics.median(times) * 1000:.1f} ms"


def measure_export(url: str, kind: str) -> dict[str, float]:
    """One export in a fresh process of this script (so the peak RSS is the export's own)."""
    import json
    import subprocess

    done = subprocess.run(
        [sys.executable, __file__, "--export", kind, "--database", url],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def export_only(url: str, kind: str) -> dict[str, float]:
    """Stream one export to /dev/null; seconds, rows, megabytes and peak RSS (MB)."""
    from app.exports import service

    base = peak_rss_mb()
    engine = make_engine(url)
    with session_factory(engine, read_only=True)() as session, open(os.devnull, "w") as out:
        study = session.scalar(select(Study))
        started, chars, lines = time.perf_counter(), 0, 0
        for chunk in service.export_chunks(session=session, study=study, kind=kind):
            out.write(chunk)
            chars += len(chunk)
            lines += chunk.count("\n")
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds, "rows": lines - 1, "mb": chars / 1e6,
        "base_mb": base, "peak_mb": peak_rss_mb(),
    }  # fmt: skip


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the
    parent that started it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--votes", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, default=None, help="keep the database in this folder")
    parser.add_argument("--export", help=argparse.SUPPRESS)  # internal: one export, JSON out
    parser.add_argument("--database", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export:
        import json

        print(json.dumps(export_only(args.database, args.export)))
        return
    folder = args.keep or Path(tempfile.mkdtemp(prefix="vidarena-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with fresh_database("sqlite", folder, name="bench") as url:
            engine = make_engine(url)
            started = time.perf_counter()
            study_id, matchups, _ = seed_study(engine)
            n = seed_votes(engine, votes=args.votes, study_id=study_id, matchups=matchups)
            seeded = time.perf_counter() - started
            rows = measure_dashboard(engine, study_id=study_id, matchups=matchups)
            votes = measure_export(url, "votes")
            clips = measure_export(url, "clips")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    rows += [
        (
            f"votes.csv: {votes['rows']:,} rows, {votes['mb']:.0f} MB streamed",
            f"{votes['seconds']:.1f} s ({votes['rows'] / votes['seconds']:,.0f} rows/s)",
        ),
        (
            "votes.csv export: peak RSS of its process (before the export: after imports)",
            f"{votes['peak_mb']:.0f} MB ({votes['base_mb']:.0f} MB)",
        ),
        (f"clips.csv: {clips['rows']:,} rows", f"{clips['seconds'] * 1000:.0f} ms"),
    ]
    print(f"\n{n:,} votes seeded in {seeded:.1f} s; {platform.python_version()} on "
          f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU(s)\n")  # fmt: skip
    print("| measurement (SQLite, embedded default) | result |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print("\n    .venv/bin/python benchmarks/analytics.py")


if __name__ == "__main__":
    main()
