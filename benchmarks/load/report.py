"""The report: what was run and on what, the realistic and saturation tables (Markdown, as in
docs/benchmarks.md), the CPU table, the statements per request beside the CPU per trial, what
went wrong, and the results as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.load.config import QUOTA
from benchmarks.load.scenarios import Result
from benchmarks.load.statements import EVALUATORS
from benchmarks.load.stats import percentile


def ms(values: list[float]) -> str:
    return " / ".join(f"{percentile(values, q):.1f}" for q in (50, 95, 99))


def reconciliation(r: Result) -> str:
    mark = "✓" if r.reconciled and not r.broken_trials else "✗ MISMATCH"
    return f"{r.stats.votes_sent:,} / {r.votes_stored:,} / {r.votes_exported:,} {mark}"


def worst_p99(r: Result) -> float:
    """The slowest p99 of the requests that bring a pair: the join (the first pair), submits
    (every later one) and any `GET next?after=` asked."""
    lat = r.stats.latencies
    return max(
        (percentile(lat[k], 99) for k in ("join", "submit", "next") if lat.get(k)),
        default=float("nan"),
    )


def realistic_table(
    results: list[Result], think: tuple[float, float], *, target_ms: float = 50
) -> str:
    lines = [
        "| database | evaluators | trials/s | first pair (join) p50 / p95 / p99 ms | submit p50 "
        "/ p95 / p99 ms | media p99 ms | GET next asked | errors | "
        f"votes sent / stored / exported | p99 < {target_ms:g} ms |",
        "|---|---:|---:|---|---|---:|---:|---:|---|---|",
    ]
    for r in results:
        lat = r.stats.latencies
        worst = worst_p99(r)
        target = "yes" if worst < target_ms else f"**no** ({worst:.0f} ms)"
        lines.append(
            f"| {r.db} | {r.evaluators:,} | {r.trials_per_s:.1f} | {ms(lat['join'])} | "
            f"{ms(lat['submit'])} | {percentile(lat['media'], 99):.1f} | "
            f"{len(lat.get('next', []))} | {r.errors} | {reconciliation(r)} | {target} |"
        )
    return "\n".join(lines)


SUBMIT_FLOOR_TARGET = 0.7  # vidarena's trials/s against the submit-shaped floor's


def saturation_table(results: list[Result]) -> str:
    lines = [
        "| database | clients | floor trials/s (1 read + 1 insert) | submit-shaped floor "
        "trials/s | vidarena trials/s | ratio to the floor | ratio to the submit-shaped floor |"
        " first pair (join) p50 / p99 ms | submit p50 / p99 ms | errors | "
        f"votes sent / stored / exported | ≥ {SUBMIT_FLOOR_TARGET:g} x submit-shaped floor |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---|---|",
    ]
    nan = float("nan")
    for r in results:
        lat = r.stats.latencies
        ratio = r.trials_per_s / r.floor_per_s if r.floor_per_s else nan
        shaped = r.submit_floor_per_s or nan
        submit_ratio = r.trials_per_s / shaped if r.submit_floor_per_s else nan
        lines.append(
            f"| {r.db} | {r.evaluators} | {r.floor_per_s or nan:,.0f} | {shaped:,.0f} | "
            f"{r.trials_per_s:,.0f} | {ratio:.2f} | {submit_ratio:.2f} | "
            f"{percentile(lat['join'], 50):.1f} / {percentile(lat['join'], 99):.1f}"
            f" | {percentile(lat['submit'], 50):.1f} / {percentile(lat['submit'], 99):.1f} | "
            f"{r.errors} | {reconciliation(r)} | "
            f"{'yes' if submit_ratio >= SUBMIT_FLOOR_TARGET else '**no**'} |"
        )
    return "\n".join(lines)


def lock_table(results: list[Result]) -> str:
    lines = [
        "| database | mode | evaluators | arrival ramp s | trials/s | shared lock ms per trial "
        "| ceiling trials/s (1 / lock time per trial) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        per_trial = r.shared_lock_ms_per_trial
        ceiling = f"{1000 / per_trial:,.0f}" if per_trial > 0 else "none (no shared lock)"
        lines.append(
            f"| {r.db} | {r.mode} | {r.evaluators:,} | {r.ramp:g} | {r.trials_per_s:,.1f} | "
            f"{per_trial:.2f} | {ceiling} |"
        )
    return "\n".join(lines)


def split(cores: list[float]) -> str:
    return " / ".join(f"{c:.2f}" for c in cores) or "-"


def cpu_table(results: list[Result]) -> str:
    lines = [
        "| database | mode | evaluators | server CPU (cores) | per worker | "
        "PostgreSQL CPU (cores) | load generator CPU (cores) | "
        "server-side mean ms: join / submit / media | server-side share < 50 ms: join / submit |",
        "|---|---|---:|---:|---|---:|---:|---|---|",
    ]
    for r in results:
        v = r.server_view
        join = v.get("/r/{key}/api/join", (float("nan"), float("nan")))
        sub = v.get("/r/{key}/api/trials/{trial_id}/votes", (float("nan"), float("nan")))
        med = v.get("/r/{key}/media/{token}", (float("nan"), float("nan")))
        floors = [
            f"{name} {split(cpu)}"
            for name, cpu in (
                ("floor", r.floor_worker_cpu),
                ("submit-shaped floor", r.submit_floor_worker_cpu),
            )
            if cpu
        ]
        floor = f" ({'; '.join(floors)})" if floors else ""
        lines.append(
            f"| {r.db} | {r.mode} | {r.evaluators:,} | {r.server_cpu:.2f} | "
            f"{split(r.worker_cpu)}{floor} | {r.database_cpu:.2f} | {r.client_cpu:.2f} | "
            f"{join[0]:.1f} / {sub[0]:.1f} / {med[0]:.1f} | "
            f"{100 * join[1]:.1f}% / {100 * sub[1]:.1f}% |"
        )
    return "\n".join(lines)


def statements_table(results: list[Result]) -> str:
    """SQL statements per request (in-process, benchmarks/load/statements.py) beside each run's
    CPU per trial."""
    lines = [
        "| database | mode | evaluators | statements per join (with the first pair) | per "
        "submit | per last submit | per GET next (resume) | commits / connection checkouts "
        "per submit | web CPU ms per trial | PostgreSQL CPU ms per trial |",
        "|---|---|---:|---|---|---|---|---|---:|---:|",
    ]
    for r in results:
        c = r.statements
        if c is None:
            continue
        lines.append(
            f"| {r.db} | {r.mode} | {r.evaluators:,} | {c.span('join')} | {c.span('submit')} | "
            f"{c.span('last submit')} | {c.span('next')} | "
            f"{c.mean('submit', 'commits'):.1f} / {c.mean('submit', 'checkouts'):.1f} | "
            f"{r.cpu_ms_per_trial:.1f} | "
            f"{r.database_cpu_ms_per_trial if r.db != 'sqlite' else float('nan'):.1f} |"
        )
    return "\n".join(lines)


def print_report(
    args: argparse.Namespace,
    *,
    command: str,
    before: str,
    think: tuple[float, float],
    realistic: list[Result],
    saturation: list[Result],
    flash: list[Result] | None = None,
) -> None:
    """The command, the machine and the setup, then the tables (stdout)."""
    low, high = think
    pin = "each worker pinned to its own core (taskset)" if args.pin else "not pinned"
    print(f"```sh\n{command}\n```\n")
    print(
        f"Machine: {before}. Server: {args.workers} uvicorn processes, a port each ({pin}), "
        "VIDARENA_ENV=production, rate limits off (VIDARENA_RATE_LIMIT_*_PER_MINUTE=0), "
        f"log level WARNING. Study: the example study (2 arms, 100 prompts, 6 criteria, quota "
        f"{QUOTA} pairs per evaluator), GIFs of {getattr(args, 'gif_bytes', 0) / 1024:.0f} KB. "
        "A trial = both clips of the prefetched pair + submit (its answer carries the next pair "
        "and the one after); an evaluator's join carries the first pair and the one after; the "
        "last pair says it is the last, so nothing is asked after it (the browser's flow).\n"
    )
    if realistic:
        print(
            f"Realistic: think {low:g} to {high:g} s per pair, {args.duration:g} s per run, "
            f"evaluators arriving at uniform random times over the first {args.ramp:g} s.\n"
        )
        print(realistic_table(realistic, (low, high)) + "\n")
    if flash:
        print(
            f"Flash crowd: the same, every evaluator arriving within the first "
            f"{args.flash_ramp:g} s (target: p99 < 500 ms).\n"
        )
        print(realistic_table(flash, (low, high), target_ms=500) + "\n")
    if saturation:
        print(
            f"Saturation: {args.clients} clients with no think time, "
            f"{args.saturation_duration:g} s per run, the first {args.warmup:g} s not counted.\n"
        )
        print(saturation_table(saturation) + "\n")
    every = realistic + (flash or []) + saturation
    print(cpu_table(every) + "\n")
    print(
        "Time under a lock shared by a whole study, per trial (SQLite: the database-wide write "
        "lock, `vidarena_sqlite_write_lock_seconds_total`, which every writer of every study "
        "shares; PostgreSQL: none, the assignment takes row locks), and the ceiling it sets on "
        "trials/s however many web processes serve:\n"
    )
    print(lock_table(every) + "\n")
    print(
        "SQL statements per request, counted in-process after each run on its database "
        f"({EVALUATORS} new evaluators, one request at a time; mean (min-max); BEGIN and COMMIT "
        "not counted), beside the run's CPU per trial (joins and clips included):\n"
    )
    print(statements_table(every) + "\n")


def problems(results: list[Result]) -> list[str]:
    """A line per run with errors, unreconciled votes or partial trials."""
    lines = []
    for r in results:
        if r.errors or not r.reconciled or r.broken_trials:
            samples = r.stats.error_samples[:]
            for floor in (r.floor_stats, r.submit_floor_stats):
                if floor:
                    samples += floor.error_samples
            lines.append(
                f"{r.db} {r.mode} {r.evaluators}: {r.errors} errors "
                f"{dict(r.stats.errors)}, votes {reconciliation(r)}, "
                f"{r.broken_trials} partial trials; {samples[:5]}"
            )
    return lines


def write_json(path: Path, results: list[Result]) -> None:
    """Every run's figures, as JSON (`--json PATH`)."""
    payload = [
        {
            "db": r.db, "mode": r.mode, "evaluators": r.evaluators,
            "trials_per_s": r.trials_per_s, "floor_per_s": r.floor_per_s,
            "submit_floor_per_s": r.submit_floor_per_s,
            "submit_floor_worker_cpu": r.submit_floor_worker_cpu,
            "cpu_ms_per_trial": r.cpu_ms_per_trial,
            "database_cpu_ms_per_trial": r.database_cpu_ms_per_trial,
            "shared_lock_ms_per_trial": r.shared_lock_ms_per_trial, "ramp": r.ramp,
            "statements": {
                kind: [vars(c) for c in runs] for kind, runs in r.statements.requests.items()
            } if r.statements else None,
            "latency_ms": {
                k: {f"p{q}": percentile(v, q) for q in (50, 95, 99)} | {"n": len(v)}
                for k, v in r.stats.latencies.items()
            },
            "errors": dict(r.stats.errors), "busy": dict(r.stats.busy),
            "votes_sent": r.stats.votes_sent,
            "votes_stored": r.votes_stored, "votes_exported": r.votes_exported,
            "partial_trials": r.broken_trials, "server_cpu": r.server_cpu,
            "client_cpu": r.client_cpu, "worker_cpu": r.worker_cpu,
            "database_cpu": r.database_cpu,
            "floor_worker_cpu": r.floor_worker_cpu, "server_view": r.server_view,
        }
        for r in results
    ]  # fmt: skip
    path.write_text(json.dumps(payload, indent=2))
