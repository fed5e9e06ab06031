"""One measured run: a scenario (realistic: evaluators arriving over a ramp and thinking per
pair; saturation: clients with no think time, beside the two floors) on a fresh database of one
kind, with the CPU it took, the reconciliation of every vote, and then the SQL statements per
request on that database (counted in-process, benchmarks/load/statements.py)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.load.client import run_async
from benchmarks.load.cpu import cpu_seconds, postgres_cpu
from benchmarks.load.evaluators import drive_rating
from benchmarks.load.floor import FLOOR_APP, drive_floor, prepare_floor
from benchmarks.load.server import (
    scrape_server_latency,
    scrape_shared_lock_seconds,
    server_env,
    uvicorn_replicas,
)
from benchmarks.load.statements import StatementCounts, count_statements
from benchmarks.load.stats import Stats, rate_in_window
from benchmarks.load.study import (
    all_or_nothing_violations,
    seed_study,
    votes_exported,
    votes_stored,
)
from tests.kit.db import fresh_database


@dataclass
class Result:
    db: str
    mode: str
    evaluators: int
    duration: float
    stats: Stats
    elapsed: float
    trials_per_s: float
    votes_stored: int
    votes_exported: int
    broken_trials: int
    server_cpu: float
    client_cpu: float
    worker_cpu: list[float]  # cores per uvicorn worker: keep-alive connections stay where accepted
    database_cpu: float  # cores of the local PostgreSQL server (0 for SQLite: in the workers)
    server_view: dict[str, tuple[float, float]]
    floor_per_s: float | None = None
    floor_stats: Stats | None = None
    floor_worker_cpu: list[float] = field(default_factory=list)
    submit_floor_per_s: float | None = None  # the submit-shaped floor (benchmarks/load/floor.py)
    submit_floor_stats: Stats | None = None
    submit_floor_worker_cpu: list[float] = field(default_factory=list)
    statements: StatementCounts | None = None
    shared_lock_s: float = 0.0  # seconds under a lock every writer of the study shares
    ramp: float = 0.0

    @property
    def shared_lock_ms_per_trial(self) -> float:
        trials = len(self.stats.trials_done)
        return 1000 * self.shared_lock_s / trials if trials else float("nan")

    @property
    def errors(self) -> int:
        return sum(self.stats.errors.values()) + sum(
            sum(s.errors.values()) for s in (self.floor_stats, self.submit_floor_stats) if s
        )

    @property
    def cpu_ms_per_trial(self) -> float:
        """Web processes' CPU per trial (everything they served: joins, clips, submits)."""
        trials = len(self.stats.trials_done)
        return 1000 * self.server_cpu * self.elapsed / trials if trials else float("nan")

    @property
    def database_cpu_ms_per_trial(self) -> float:
        trials = len(self.stats.trials_done)
        return 1000 * self.database_cpu * self.elapsed / trials if trials else float("nan")

    @property
    def reconciled(self) -> bool:
        return self.stats.votes_sent == self.votes_stored == self.votes_exported


def measure(
    *,
    db: str,
    mode: str,
    evaluators: int,
    duration: float,
    think: tuple[float, float],
    args: argparse.Namespace,
    workdir: Path,
    ramp: float | None = None,
) -> Result:
    ramp = (args.ramp if ramp is None else ramp) if mode == "realistic" else 0.0
    scenario = workdir / f"{db}-{mode}-{evaluators}-ramp{ramp:g}"
    scenario.mkdir()
    (scenario / "var").mkdir()
    with fresh_database(db, scenario) as url:
        seeded = seed_study(url, scenario / "media")
        env = server_env(url, scenario)
        floors: list[tuple[float, Stats, list[float]]] = []
        if mode == "saturation":
            # The floors first, on a database of the same kind, served the same way: the
            # minimal endpoint, then the submit-shaped one, each for the run's duration.
            with fresh_database(db, scenario, name="floor", migrate=False) as furl:
                prepare_floor(furl)
                fenv = server_env(url, scenario, floor_url=furl)
                with uvicorn_replicas(
                    FLOOR_APP,
                    fenv,
                    workers=args.workers,
                    pin=args.pin,
                    log=scenario / "floor.log",
                ) as floor_server:
                    for criteria in (None, seeded.criteria):
                        floor_before = floor_server.worker_cpu()
                        fstats, floor_elapsed = run_async(
                            drive_floor(
                                floor_server.base_urls,
                                clients=evaluators,
                                duration=duration,
                                seed=args.seed,
                                criteria=criteria,
                            )
                        )
                        fcpu = [
                            (after - before) / floor_elapsed
                            for before, after in zip(
                                floor_before, floor_server.worker_cpu(), strict=True
                            )
                        ]
                        start = min(fstats.trials_done, default=0) + args.warmup
                        floor_rate = rate_in_window(
                            fstats.trials_done, start, start + duration - args.warmup
                        )
                        floors.append((floor_rate, fstats, fcpu))
        log = scenario / "server.log"
        with uvicorn_replicas(
            "app.main:create_app", env, workers=args.workers, pin=args.pin, log=log
        ) as server:
            server_before, client_before = server.cpu(), cpu_seconds(os.getpid())
            workers_before = server.worker_cpu()
            database_before = postgres_cpu()
            stats, elapsed = run_async(
                drive_rating(
                    server.base_urls,
                    seeded,
                    evaluators=evaluators,
                    duration=duration,
                    think=think,
                    ramp=ramp,
                    connections=args.connections or evaluators,
                    seed=args.seed,
                )
            )
            server_cpu = (server.cpu() - server_before) / elapsed
            client_cpu = (cpu_seconds(os.getpid()) - client_before) / elapsed
            worker_cpu = [
                (after - before) / elapsed
                for before, after in zip(workers_before, server.worker_cpu(), strict=True)
            ]
            database_cpu = (postgres_cpu() - database_before) / elapsed if db != "sqlite" else 0.0
            server_view = scrape_server_latency(server)
            shared_lock_s = scrape_shared_lock_seconds(server)
        if mode == "saturation":
            start = min(stats.trials_done, default=0) + args.warmup
            per_s = rate_in_window(stats.trials_done, start, start + duration - args.warmup)
        else:
            per_s = len(stats.trials_done) / elapsed
        stored = votes_stored(url, seeded.study_id)
        exported = votes_exported(env, seeded.slug, scenario / "votes.csv")
        broken = all_or_nothing_violations(url, seeded.study_id, len(seeded.criteria))
        args.gif_bytes = seeded.gif_bytes
        # After the reconciliation: its evaluators' votes are not the load's.
        statements = count_statements(url, scenario, seeded)
    none: tuple[None, None, list[float]] = (None, None, [])
    (floor_per_s, floor_stats, floor_worker_cpu), submit_floor = floors or [none, none]
    return Result(
        db=db,
        mode=mode,
        evaluators=evaluators,
        duration=duration,
        stats=stats,
        elapsed=elapsed,
        trials_per_s=per_s,
        votes_stored=stored,
        votes_exported=exported,
        broken_trials=broken,
        server_cpu=server_cpu,
        client_cpu=client_cpu,
        worker_cpu=worker_cpu,
        database_cpu=database_cpu,
        server_view=server_view,
        floor_per_s=floor_per_s,
        floor_stats=floor_stats,
        floor_worker_cpu=floor_worker_cpu,
        submit_floor_per_s=submit_floor[0],
        submit_floor_stats=submit_floor[1],
        submit_floor_worker_cpu=submit_floor[2],
        statements=statements,
        shared_lock_s=shared_lock_s,
        ramp=ramp,
    )
