"""Render worker throughput: the post-render stage serial with the render, or overlapped with it.

The render stage is a timed stand-in (sleep --render-s seconds, as a GPU render leaves the CPU
idle, then hand over 16 frames of 512x512) or the tiny Lightning model (`--render tiny`, its
64x64 frames upscaled to 512x512 so that the encode costs what a full-size clip's does). The
post-render stage is the real one minus the database: `encode_gif`, `gif_info` and a put into
local storage, run either in the rendering process after each render (serial: the worker before
issue 18) or in the worker's real `EncoderPool` (`workers/render.py`) of --encoders processes
while the next clip renders (overlapped).

    .venv/bin/python benchmarks/pipeline.py [--clips 12] [--render-s 0.3 1.0] [--encoders 1 2]
    .venv/bin/python benchmarks/pipeline.py --render tiny

Per row: render s and encode s per clip (each stage's own mean), the measured clips/s over
--clips clips after a warm-up, and the two models of it: 1 / (render + encode) for stages that
add up, min(1 / render, encoders / encode) for stages that overlap (the slowest stage sets it;
with encoders up to the free cores).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.clips.gif import encode_gif, gif_info
from app.config import Settings
from app.storage import get_storage
from workers.render import EncoderPool, Outcome, PostRender

FPS = 8
FRAMES = 16
SIZE = 512


def main() -> None:
    args = parse_args()
    storage = tempfile.mkdtemp(prefix="pipeline-bench-")
    settings = Settings(_env_file=None, var_dir=Path(storage), storage_url=storage)  # type: ignore[call-arg]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"`{' '.join([Path(sys.executable).name, *sys.argv])}`")
    print(f"{platform.machine()}, {cores} cores, load {os.getloadavg()[0]:.1f}\n")
    if args.render_s is None:
        frames = moving_photograph()
        encode_s = min(timed_encode(frames) for _ in range(2))
        print(f"encode_gif of one clip here: {encode_s:.2f} s\n")
        args.render_s = [0.3, round(encode_s, 1), round(2 * encode_s, 1)]
    renders = [Render(f"sleep {s:g} s", seconds=s) for s in args.render_s]
    if args.render == "tiny":
        renders = [Render("tiny Lightning", seconds=None, tiny_root=args.tiny_root)]
    print(
        "| render stage | mode | encoders | render s | encode s | clips/s "
        "| 1 / (render + encode) | min(1 / render, encoders / encode) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for render in renders:
        render.warm_up()
        rows = [run_serial(render, settings=settings, clips=args.clips)]
        rows += [run_overlapped(render, settings, e, clips=args.clips) for e in args.encoders]
        for row in rows:
            print(row.markdown())
    print(f"\n{args.clips} clips per row after one warm-up clip; 16 frames of 512x512 per clip.")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--render", choices=("sleep", "tiny"), default="sleep")
    parser.add_argument(
        "--render-s",
        type=float,
        nargs="+",
        default=None,
        help="render stand-in seconds; default: 0.3 and 1x and 2x this machine's encode time",
    )
    parser.add_argument("--encoders", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--tiny-root", type=Path, default=None, help="tiny-model cache folder")
    return parser.parse_args()


# --- the render stage ------------------------------------------------------------------------


class Render:
    """The render stage: a sleep and fixed frames, or the tiny Lightning pipeline."""

    def __init__(self, name: str, *, seconds: float | None, tiny_root: Path | None = None):
        self.name, self.seconds, self.tiny_root = name, seconds, tiny_root
        self.frames = moving_photograph()
        self.renderer = None

    def warm_up(self) -> None:
        if self.seconds is None:
            from app.studies.schemas import ArmSpec
            from workers.pipelines import get_renderer

            arm = ArmSpec(
                name="lightning-4step",
                kind="animatediff-lightning",
                base_model="emilianJR/epiCRealism",
                motion_adapter="ByteDance/AnimateDiff-Lightning",
                steps=4,
                guidance_scale=1.0,
                num_frames=FRAMES,
                width=SIZE,
                height=SIZE,
                fps=FPS,
            )
            self.renderer = get_renderer(arm, tiny=True, device="cpu", tiny_root=self.tiny_root)
            self.renderer.render(prompt="warm-up", seed=0)

    def __call__(self, seed: int) -> list[Image.Image]:
        if self.renderer is None:
            time.sleep(self.seconds or 0.0)
            return self.frames
        frames = self.renderer.render(prompt="a lighthouse at dusk", seed=seed).frames
        return [frame.resize((SIZE, SIZE), Image.Resampling.BICUBIC) for frame in frames]


def moving_photograph() -> list[Image.Image]:
    """scikit-image's astronaut photograph under a slow zoom and pan, as diffusion output moves."""
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    width, height = photo.size
    frames = []
    for i in range(FRAMES):
        crop = int(width * (0.8 - 0.01 * i))
        left, top = 20 + 3 * i, 30 + 2 * i
        box = (left, top, min(width, left + crop), min(height, top + crop))
        frames.append(photo.crop(box).resize((SIZE, SIZE), Image.Resampling.BICUBIC))
    noise = np.random.default_rng(0)
    return [
        Image.fromarray(
            np.clip(
                np.asarray(f, dtype=np.int16) + noise.integers(-2, 3, (SIZE, SIZE, 3)), 0, 255
            ).astype(np.uint8)
        )
        for f in frames
    ]


def timed_encode(frames: list[Image.Image]) -> float:
    started = time.perf_counter()
    encode_gif(frames, fps=FPS)
    return time.perf_counter() - started


# --- the post-render stage ---------------------------------------------------------------------


def encode_and_store(work: PostRender) -> Outcome:
    """The post-render stage without the database: encode, read back, store."""
    started = time.perf_counter()
    data = encode_gif(work.frames, fps=work.fps)
    gif_info(data)
    encode_s = time.perf_counter() - started
    get_storage(work.settings).put(data, suffix=".gif")
    return Outcome("done", f"{encode_s:.6f}")


class NoLease:
    def stop(self) -> None:
        pass


@dataclass
class Row:
    render: str
    mode: str
    encoders: int
    render_s: float
    encode_s: float
    clips_per_s: float

    def markdown(self) -> str:
        added = 1 / (self.render_s + self.encode_s)
        overlapped = min(1 / self.render_s, self.encoders / self.encode_s)
        model = f"{overlapped:.2f}" if self.mode == "overlapped" else "-"
        return (
            f"| {self.render} | {self.mode} | {self.encoders or '-'} | {self.render_s:.3f} "
            f"| {self.encode_s:.3f} | **{self.clips_per_s:.2f}** | {added:.2f} | {model} |"
        )


def _work(settings: Settings, frames: list[Image.Image], clip: int) -> PostRender:
    return PostRender(
        settings=settings,
        clip_id=clip,
        task_id=f"bench-{clip}",
        frames=frames,
        fps=FPS,
        telemetry={},
        started_at=time.time(),
    )


def run_serial(render: Render, *, settings: Settings, clips: int) -> Row:
    render_times, encode_times = [], []
    encode_and_store(_work(settings, render(0), 0))  # warm-up
    started = time.perf_counter()
    for clip in range(1, clips + 1):
        t = time.perf_counter()
        frames = render(clip)
        render_times.append(time.perf_counter() - t)
        encode_times.append(float(encode_and_store(_work(settings, frames, clip)).detail))
    elapsed = time.perf_counter() - started
    return Row(
        render.name,
        "serial",
        0,
        statistics.mean(render_times),
        statistics.mean(encode_times),
        clips / elapsed,
    )


def run_overlapped(render: Render, settings: Settings, encoders: int, *, clips: int) -> Row:
    pool = EncoderPool(encoders, stage=encode_and_store)
    pool.warm_up()
    done = threading.Semaphore(0)
    encode_times: list[float] = []

    def finished(clip: int, outcome: Outcome) -> None:
        encode_times.append(float(outcome.detail))
        done.release()

    pool.hand_off(_work(settings, render(0), 0), lease=NoLease(), on_finished=finished)
    done.acquire()  # warm-up clip
    encode_times.clear()
    render_times = []
    started = time.perf_counter()
    for clip in range(1, clips + 1):
        t = time.perf_counter()
        frames = render(clip)
        render_times.append(time.perf_counter() - t)
        pool.hand_off(_work(settings, frames, clip), lease=NoLease(), on_finished=finished)
    for _ in range(clips):
        done.acquire()
    elapsed = time.perf_counter() - started
    pool.shutdown(wait=True)
    return Row(
        render.name,
        "overlapped",
        encoders,
        statistics.mean(render_times),
        statistics.mean(encode_times),
        clips / elapsed,
    )


if __name__ == "__main__":
    main()
