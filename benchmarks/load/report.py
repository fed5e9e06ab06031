"""The report: what was run and on what, the realistic and saturation tables (Markdown, as in
docs/benchmarks.md), the CPU table, what went wrong, and the results as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.load.config import QUOTA
from benchmarks.load.scenarios import Result
from benchmarks.load.stats import percentile


def ms(values: list[float]) -> str:
    return " / ".join(f"{percentile(values, q):.1f}" for q in (50, 95, 99))


def reconciliation(r: Result) -> str:
    mark = "✓" if r.reconciled and not r.broken_trials else "✗ MISMATCH"
    return f"{r.stats.votes_sent:,} / {r.votes_stored:,} / {r.votes_exported:,} {mark}"


def realistic_table(results: list[Result], think: tuple[float, float]) -> str:
    lines = [
        "| database | evaluators | trials/s | next pair p50 / p95 / p99 ms | submit p50 / p95 / "
        "p99 ms | media p99 ms | join p99 ms | errors | votes sent / stored / exported | "
        "p99 < 50 ms |",
        "|---|---:|---:|---|---|---:|---:|---:|---|---|",
    ]
    for r in results:
        lat = r.stats.latencies
        worst = max(percentile(lat["next"], 99), percentile(lat["submit"], 99))
        target = "yes" if worst < 50 else f"**no** ({worst:.0f} ms)"
        lines.append(
            f"| {r.db} | {r.evaluators:,} | {r.trials_per_s:.1f} | {ms(lat['next'])} | "
            f"{ms(lat['submit'])} | {percentile(lat['media'], 99):.1f} | "
            f"{percentile(lat['join'], 99):.1f} | {r.errors} | {reconciliation(r)} | {target} |"
        )
    return "\n".join(lines)


def saturation_table(results: list[Result]) -> str:
    lines = [
        "| database | clients | floor trials/s (1 read + 1 insert) | vidarena trials/s | "
        "ratio | next pair p50 / p99 ms | submit p50 / p99 ms | errors | "
        "votes sent / stored / exported | ≥ half the floor |",
        "|---|---:|---:|---:|---:|---|---|---:|---|---|",
    ]
    for r in results:
        lat = r.stats.latencies
        ratio = r.trials_per_s / r.floor_per_s if r.floor_per_s else float("nan")
        lines.append(
            f"| {r.db} | {r.evaluators} | {r.floor_per_s:,.0f} | {r.trials_per_s:,.0f} | "
            f"{ratio:.2f} | {percentile(lat['next'], 50):.1f} / {percentile(lat['next'], 99):.1f}"
            f" | {percentile(lat['submit'], 50):.1f} / {percentile(lat['submit'], 99):.1f} | "
            f"{r.errors} | {reconciliation(r)} | {'yes' if ratio >= 0.5 else '**no**'} |"
        )
    return "\n".join(lines)


def split(cores: list[float]) -> str:
    return " / ".join(f"{c:.2f}" for c in cores) or "-"


def cpu_table(results: list[Result]) -> str:
    lines = [
        "| database | mode | evaluators | server CPU (cores) | per worker | "
        "PostgreSQL CPU (cores) | load generator CPU (cores) | "
        "server-side mean ms: next / submit / media | server-side share < 50 ms: next / submit |",
        "|---|---|---:|---:|---|---:|---:|---|---|",
    ]
    for r in results:
        v = r.server_view
        nxt = v.get("/r/{key}/api/next", (float("nan"), float("nan")))
        sub = v.get("/r/{key}/api/trials/{trial_id}/votes", (float("nan"), float("nan")))
        med = v.get("/r/{key}/media/{token}", (float("nan"), float("nan")))
        floor = f" (floor {split(r.floor_worker_cpu)})" if r.floor_worker_cpu else ""
        lines.append(
            f"| {r.db} | {r.mode} | {r.evaluators:,} | {r.server_cpu:.2f} | "
            f"{split(r.worker_cpu)}{floor} | {r.database_cpu:.2f} | {r.client_cpu:.2f} | "
            f"{nxt[0]:.1f} / {sub[0]:.1f} / {med[0]:.1f} | "
            f"{100 * nxt[1]:.1f}% / {100 * sub[1]:.1f}% |"
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
        "and the one after); an evaluator's first GET next carries the first pair and the one "
        "after; the last pair asks GET next?after (the browser's flow).\n"
    )
    if realistic:
        print(
            f"Realistic: think {low:g} to {high:g} s per pair, {args.duration:g} s per run, "
            f"evaluators arriving at uniform random times over the first {args.ramp:g} s.\n"
        )
        print(realistic_table(realistic, (low, high)) + "\n")
    if saturation:
        print(
            f"Saturation: {args.clients} clients with no think time, "
            f"{args.saturation_duration:g} s per run, the first {args.warmup:g} s not counted.\n"
        )
        print(saturation_table(saturation) + "\n")
    print(cpu_table(realistic + saturation) + "\n")


def problems(results: list[Result]) -> list[str]:
    """A line per run with errors, unreconciled votes or partial trials."""
    lines = []
    for r in results:
        if r.errors or not r.reconciled or r.broken_trials:
            samples = r.stats.error_samples[:]
            if r.floor_stats:
                samples += r.floor_stats.error_samples
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
