"""What measuring a clip costs (app/clips/measures.py), against what rendering it costs.

A 16 x 512 x 512 clip (benchmarks/gif.py's synthetic landscape, panned) encoded by the worker's
encoder, then measured from the GIF bytes as the worker does (`measure_gif`), median of --runs
after one warm-up, with OpenCV's default threads and with one thread (the worker's encoder
processes run side by side, one core each); then where the time goes, the cost at other flow
working sizes (FLOW_SIZE), and how close motion_mean comes to the truth on photographs panned
by known amounts at each size (needs scikit-image, in the dev extra).

    .venv/bin/python benchmarks/measures.py [--runs 7]

The render cost per clip it compares with is docs/benchmarks.md's measured H100 figure (see
RENDER_S); the issue's target is measuring at most 10% of it.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.clips import measures
from app.clips.gif import encode_gif
from benchmarks.gif import panned_landscape

# docs/benchmarks.md, "Rendering", GPU full size: one NVIDIA H100 80GB HBM3, 2026-11-27, mean
# of 3 clips of 16 x 512^2 (denoise + decode on the GPU, GIF encode on the CPU), "clip s".
RENDER_S = {"lightning-4step (H100)": 4.34, "animatediff 25 steps (H100)": 8.14}
TARGET = 0.10
SIZES = (512, 256, 192, 128, 96)
PHOTOS = ("astronaut", "coffee", "chelsea")
PANS = (1, 2, 4, 9, 16, 24)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs (median reported)")
    args = parser.parse_args()
    frames = panned_landscape(frames=16, size=512)
    data = encode_gif(frames, fps=8)
    print(f"`{' '.join([Path(sys.executable).name, *sys.argv])}` on {platform.machine()}, ", end="")
    print(f"{os.cpu_count()} CPUs, OpenCV {cv2.__version__}, clip 16 x 512^2 ({len(data):,} B)\n")
    default_threads = cv2.getNumThreads()
    for threads in (default_threads, 1):
        cv2.setNumThreads(threads)
        seconds = median_time(lambda: measures.measure_gif(data, num_frames=16), runs=args.runs)
        label = f"{threads} OpenCV thread{'s' if threads != 1 else ''}"
        print(f"measure_gif, {label}: median {seconds:.3f} s of {args.runs}")
        for arm, render_s in RENDER_S.items():
            share = seconds / render_s
            verdict = "within" if share <= TARGET else "over"
            print(f"  vs {arm} {render_s:.2f} s/clip: {share:.1%} ({verdict} the 10% target)")
    cv2.setNumThreads(1)
    print("\nWhere the time goes (1 thread, median of runs, s):")
    for stage, seconds in stages(data, runs=args.runs).items():
        print(f"  {stage:<38} {seconds:.4f}")
    print("\nFlow working size (1 thread): longer side in px, measure_gif s on the clip above")
    saved = measures.FLOW_SIZE
    try:
        for size in SIZES:
            measures.FLOW_SIZE = size
            seconds = median_time(lambda: measures.measure_gif(data, num_frames=16), runs=args.runs)
            mark = " (default)" if size == saved else ""
            print(f"  {size:>4}{mark:<10} {seconds:.3f} s")
        accuracy(saved)
    finally:
        measures.FLOW_SIZE = saved


def accuracy(default: int) -> None:
    """motion_mean over the truth on photographs (scikit-image's astronaut, coffee, chelsea)
    panned k px per frame at 512^2, 6 frames, by working size."""
    try:
        from skimage import data as photos
    except ImportError:
        print("\n(motion accuracy on photographs: install scikit-image, the dev extra)")
        return
    pans = {k: [_pan(getattr(photos, name)(), k) for name in PHOTOS] for k in PANS}
    print(f"\nmotion_mean / truth, mean of {', '.join(PHOTOS)} panned k px/frame (512^2):")
    print("| working px | " + " | ".join(f"k={k}" for k in PANS) + " |")
    print("|---:|" + "---:|" * len(PANS))
    for size in SIZES:
        measures.FLOW_SIZE = size
        ratios = [
            statistics.mean(measures.measure_frames(c)["motion_mean"].value / k for c in clips)  # type: ignore[operator]
            for k, clips in pans.items()
        ]
        mark = " (default)" if size == default else ""
        print(f"| {size}{mark} | " + " | ".join(f"{r:.3f}" for r in ratios) + " |")


def _pan(image: np.ndarray, k: int, *, frames: int = 6, size: int = 512) -> list[np.ndarray]:
    height, width = image.shape[:2]
    scale = max(size / height, (size + k * frames + 2) / width)
    big = cv2.resize(
        image, (int(width * scale) + 1, int(height * scale) + 1), interpolation=cv2.INTER_CUBIC
    )
    return [np.ascontiguousarray(big[:size, i * k : i * k + size]) for i in range(frames)]


def median_time(work: Callable[[], object], *, runs: int) -> float:
    work()  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def stages(data: bytes, *, runs: int) -> dict[str, float]:
    """Each step of measure_gif timed apart (the same calls measures.py makes)."""
    frames = measures.decode_frames(data, num_frames=16)
    greys = [measures._grey(f) for f in frames]
    working = [measures._working(g) for g in greys]
    factor = working[0][1]
    pairs = list(itertools.pairwise(w for w, _ in working))
    flows = [
        np.asarray(cv2.calcOpticalFlowFarneback(b, a, None, *measures._FARNEBACK)) for a, b in pairs
    ]
    height, width = greys[0].shape
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    full = list(itertools.pairwise(greys))
    return {
        "decode GIF (16 frames)": median_time(
            lambda: measures.decode_frames(data, num_frames=16), runs=runs
        ),
        "grey + resize to working size": median_time(
            lambda: [measures._working(measures._grey(f)) for f in frames], runs=runs
        ),
        "Farnebäck flow (15 pairs)": median_time(
            lambda: [
                cv2.calcOpticalFlowFarneback(b, a, None, *measures._FARNEBACK) for a, b in pairs
            ],
            runs=runs,
        ),
        "flicker: warp at clip size (15 pairs)": median_time(
            lambda: [
                measures._residual(a, b, f * factor, xs, ys)
                for (a, b), f in zip(full, flows, strict=True)
            ],
            runs=runs,
        ),
        "sharpness (16 full frames)": median_time(
            lambda: [measures._sharpness(g) for g in greys], runs=runs
        ),
        "colourfulness (16 full frames)": median_time(
            lambda: [measures.colourfulness(f) for f in frames], runs=runs
        ),
    }


if __name__ == "__main__":
    main()
