"""`python -m app.ops.gpuslot`: each scaled worker container takes a GPU of its own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Prints the GPU it was given (and the {gpu} placeholder filled in), then holds it a while.
HOLD = (
    "import os, sys, time; print(os.environ.get('CUDA_VISIBLE_DEVICES'), sys.argv[1], "
    "flush=True); time.sleep(float(sys.argv[2]))"
)


def slot(
    lock_dir,
    *args: str,
    gpus: str | None = "0,1",
    wait: float = 0,
    hold: float = 30,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "app.ops.gpuslot",
        "--lock-dir",
        str(lock_dir),
        "--wait",
        str(wait),
        *args,
    ]
    if gpus is not None:
        command += ["--gpus", gpus]
    command += ["--", sys.executable, "-c", HOLD, "gpu{gpu}", str(hold)]
    base = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return subprocess.Popen(
        command, env=base | (env or {}), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def first_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline().strip()


def test_each_worker_gets_its_own_gpu_and_extra_ones_are_told_to_scale_down(tmp_path):
    first, second = slot(tmp_path), None
    try:
        assert first_line(first) == "0 gpu0"
        second = slot(tmp_path)
        assert first_line(second) == "1 gpu1"
        third = slot(tmp_path, wait=0.5)
        _, err = third.communicate(timeout=30)
        assert third.returncode != 0
        assert "already has a render worker" in err and "at most 2" in err
        # A worker that dies gives its GPU back at once.
        first.kill()
        first.wait()
        fourth = slot(tmp_path, wait=10, hold=0)
        out, _ = fourth.communicate(timeout=30)
        assert out.strip() == "0 gpu0" and fourth.returncode == 0
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def test_a_gpu_chosen_by_the_operator_is_kept(tmp_path):
    process = slot(tmp_path, hold=0, env={"CUDA_VISIBLE_DEVICES": "3"})
    out, _ = process.communicate(timeout=30)
    assert out.strip() == "3 gpu3"


def test_without_a_gpu_the_command_runs_as_is(tmp_path):
    process = slot(tmp_path, gpus=None, hold=0, env={"PATH": "/nonexistent"})
    out, err = process.communicate(timeout=30)
    assert out.strip() == "None gpucpu" and "no GPU found" in err


@pytest.mark.parametrize("argv", [[], ["--"]])
def test_a_command_is_required(tmp_path, argv):
    from app.ops.gpuslot import main

    with pytest.raises(SystemExit):
        main(["--lock-dir", str(tmp_path), *argv])
