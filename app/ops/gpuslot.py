"""Give a scaled render-worker container a GPU of its own, then run its command there.

    python -m app.ops.gpuslot -- vidarena worker --hostname gpu{gpu}@%h

`docker compose up --scale worker=N` starts N identical containers, and a compose device
reservation of `count: 1` hands every one of them GPU 0. So the worker containers see all the
machine's GPUs and each takes the first free one: it holds an exclusive `flock` on
`<lock dir>/gpu<i>.lock` (a volume shared by the containers of one machine) for as long as its
worker process lives, sets `CUDA_VISIBLE_DEVICES=i`, replaces `{gpu}` in the command with `i`,
and `exec`s the command, which inherits the lock. A container that dies releases its GPU at once.

More containers than GPUs: the extra ones wait `--wait` seconds for a GPU, then exit with a
message saying to scale to at most the number of GPUs. `CUDA_VISIBLE_DEVICES` already set: the
operator chose, nothing is locked. No GPU found (`nvidia-smi` missing): the command runs as is.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_LOCK_DIR = "/var/lock/vidarena-gpus"


def detect_gpus() -> list[str]:
    """GPU indices from nvidia-smi; empty when there is none (or no driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]


def acquire(gpus: list[str], lock_dir: Path, *, wait_s: float) -> tuple[str, int]:
    """Lock the first free GPU; returns (index, the locked file descriptor)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        for index in gpus:
            fd = os.open(lock_dir / f"gpu{index}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {os.uname().nodename}\n".encode())
            return index, fd
        if time.monotonic() >= deadline:
            raise SystemExit(
                f"every GPU of this machine ({', '.join(gpus)}) already has a render worker "
                f"(locks in {lock_dir}); scale the worker service to at most {len(gpus)} "
                "containers per machine"
            )
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.ops.gpuslot", description=__doc__)
    parser.add_argument("--lock-dir", default=os.environ.get("GPU_LOCK_DIR", DEFAULT_LOCK_DIR))
    parser.add_argument("--gpus", help="comma-separated GPU indices (default: nvidia-smi)")
    parser.add_argument("--wait", type=float, default=600.0, help="seconds to wait for a GPU")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    env = dict(os.environ)
    gpus = [g for g in (args.gpus or "").split(",") if g.strip()] or detect_gpus()
    if env.get("CUDA_VISIBLE_DEVICES"):
        gpu = env["CUDA_VISIBLE_DEVICES"]
    elif not gpus:
        print("gpuslot: no GPU found; running without one", file=sys.stderr, flush=True)
        gpu = "cpu"
    else:
        gpu, fd = acquire(gpus, Path(args.lock_dir), wait_s=args.wait)
        os.set_inheritable(fd, True)  # the lock lives as long as the exec'd worker
        env["CUDA_VISIBLE_DEVICES"] = gpu
        print(f"gpuslot: this worker renders on GPU {gpu}", file=sys.stderr, flush=True)
    command = [part.replace("{gpu}", gpu) for part in command]
    os.execvpe(command[0], command, env)  # noqa: S606 - the operator's own command


if __name__ == "__main__":  # pragma: no cover
    main()
