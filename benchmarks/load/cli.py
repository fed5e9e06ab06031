"""The command line: `python -m benchmarks.load [OPTIONS]` runs the scenarios asked for on each
database kind in turn, then prints the report; exit status 1 when a run had errors, unreconciled
votes or partial trials."""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import benchmarks.load as package
from benchmarks.load.cpu import machine
from benchmarks.load.report import print_report, problems, write_json
from benchmarks.load.scenarios import Result, measure


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.load",
        description=package.__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--mode", choices=["realistic", "saturation", "both"], default="both")
    p.add_argument("--evaluators", default="200,1000", help="realistic mode: comma-separated")
    p.add_argument("--think", default="3,7", help="realistic mode: think seconds per pair, MIN,MAX")
    p.add_argument("--duration", type=float, default=60, help="realistic mode: seconds per run")
    p.add_argument(
        "--ramp",
        type=float,
        default=30,
        help="realistic mode: evaluators arrive at uniform random times over the first RAMP s",
    )
    p.add_argument(
        "--flash",
        default="",
        help="realistic mode: also these evaluator counts (comma-separated) arriving within "
        "--flash-ramp seconds, a flash crowd, in the same run",
    )
    p.add_argument("--flash-ramp", type=float, default=7.0, help="seconds a flash crowd arrives in")
    p.add_argument("--clients", type=int, default=32, help="saturation mode: concurrent clients")
    p.add_argument(
        "--saturation-duration", type=float, default=25, help="saturation mode: seconds per run"
    )
    p.add_argument("--warmup", type=float, default=5, help="saturation: seconds not counted")
    p.add_argument("--workers", type=int, default=2, help="uvicorn processes (a port each)")
    p.add_argument("--pin", action="store_true", help="taskset each uvicorn worker to one core")
    p.add_argument(
        "--connections",
        type=int,
        default=0,
        help="client connection limit (default: one per evaluator, as browsers have their own)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", type=Path, help="keep databases, logs and exports in this folder")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Stopped early (SIGTERM): still stop the servers and drop the databases (finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    modes = ["realistic", "saturation"] if args.mode == "both" else [args.mode]
    low, high = (float(x) for x in args.think.split(","))
    evaluator_counts = [int(x) for x in args.evaluators.split(",")]
    command = shlex.join([".venv/bin/python", "-m", "benchmarks.load", *sys.argv[1:]])
    before = machine()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="vidarena-load-", dir=args.keep))
    realistic: list[Result] = []
    flash: list[Result] = []
    saturation: list[Result] = []
    flash_counts = [int(x) for x in args.flash.split(",") if x]
    try:
        for db in dbs:
            if "realistic" in modes:
                for n in evaluator_counts:
                    r = measure(
                        db=db, mode="realistic", evaluators=n, duration=args.duration,
                        think=(low, high), args=args, workdir=workdir,
                    )  # fmt: skip
                    realistic.append(r)
                    print(f"# {db} realistic {n}: {r.trials_per_s:.1f} trials/s", file=sys.stderr)
                for n in flash_counts:
                    r = measure(
                        db=db, mode="realistic", evaluators=n, duration=args.duration,
                        think=(low, high), args=args, workdir=workdir, ramp=args.flash_ramp,
                    )  # fmt: skip
                    flash.append(r)
                    print(f"# {db} flash crowd {n}: {r.trials_per_s:.1f} trials/s", file=sys.stderr)
            if "saturation" in modes:
                r = measure(
                    db=db, mode="saturation", evaluators=args.clients,
                    duration=args.saturation_duration, think=(0.0, 0.0), args=args,
                    workdir=workdir,
                )  # fmt: skip
                saturation.append(r)
                print(
                    f"# {db} saturation: {r.trials_per_s:.0f} vs floor {r.floor_per_s:.0f}, "
                    f"submit-shaped floor {r.submit_floor_per_s:.0f}",
                    file=sys.stderr,
                )
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print_report(
        args,
        command=command,
        before=before,
        think=(low, high),
        realistic=realistic,
        flash=flash,
        saturation=saturation,
    )
    failed = problems(realistic + flash + saturation)
    if args.json:
        write_json(args.json, realistic + flash + saturation)
    if failed:
        print("FAILED:\n" + "\n".join(failed), file=sys.stderr)
        return 1
    return 0
