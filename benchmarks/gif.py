"""GIF encoders compared: `app.clips.gif.encode_gif` (one shared imagequant palette) against
diffusers' `export_to_gif` (Pillow's per-frame palettes, the common default).

Bytes, PSNR and SSIM of the decoded GIF against the source frames, and encode seconds (best of
--repeat), on two clips: a synthetic 16-frame 512x512 landscape with camera pan (sky gradient,
textured ground, soft shapes) and a clip rendered by the tiny random-weight Lightning pipeline.

    .venv/bin/python benchmarks/gif.py [--repeat 3] [--tiny-root var/tiny-models]

Runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import io
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageSequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.clips.gif import encode_gif

FPS = 8
Encoder = Callable[[list[Image.Image]], bytes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="encode timings: best of N")
    parser.add_argument("--tiny-root", type=Path, default=None, help="tiny-model cache folder")
    args = parser.parse_args()
    encoders: dict[str, Encoder] = {
        "diffusers export_to_gif (per-frame palettes)": export_to_gif_bytes,
        "encode_gif dither 1.0 (default)": lambda f: encode_gif(f, fps=FPS, dither=1.0),
        "encode_gif dither 0.5": lambda f: encode_gif(f, fps=FPS, dither=0.5),
        "encode_gif dither 0.0": lambda f: encode_gif(f, fps=FPS, dither=0.0),
    }
    clips = {
        "landscape pan 16x512x512": panned_landscape(frames=16, size=512),
        "tiny Lightning 16x64x64": tiny_frames(args.tiny_root),
    }
    print(f"`{' '.join([Path(sys.executable).name, *sys.argv])}` on {platform.machine()}\n")
    print("| clip | encoder | bytes | x default | PSNR dB | SSIM | encode s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for clip_name, frames in clips.items():
        baseline = None
        for name, encoder in encoders.items():
            data, seconds = timed(encoder, frames, repeat=args.repeat)
            baseline = baseline or len(data)
            decoded = decode(data)
            print(
                f"| {clip_name} | {name} | {len(data):,} | {len(data) / baseline:.2f} "
                f"| {psnr(frames, decoded):.2f} | {ssim(frames, decoded):.4f} | {seconds:.2f} |"
            )


def export_to_gif_bytes(frames: list[Image.Image]) -> bytes:
    from diffusers.utils import export_to_gif

    with tempfile.TemporaryDirectory() as folder:
        path = export_to_gif(frames, str(Path(folder) / "clip.gif"), fps=FPS)
        return Path(path).read_bytes()


def timed(encoder: Encoder, frames: list[Image.Image], *, repeat: int) -> tuple[bytes, float]:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        data = encoder(frames)
        best = min(best, time.perf_counter() - started)
    return data, best


def decode(data: bytes) -> list[Image.Image]:
    with Image.open(io.BytesIO(data)) as image:
        return [frame.convert("RGB") for frame in ImageSequence.Iterator(image)]


# --- clips -----------------------------------------------------------------------------------


def panned_landscape(
    *, frames: int, size: int, step: tuple[int, int] = (9, 3)
) -> list[Image.Image]:
    """A natural-ish scene (sky gradient, textured ground, soft blobs) panned across frames."""
    width, height = size + step[0] * frames, size + step[1] * frames
    scene = _landscape(width, height, rng=np.random.default_rng(7))
    return [
        Image.fromarray(scene[i * step[1] : i * step[1] + size, i * step[0] : i * step[0] + size])
        for i in range(frames)
    ]


def _landscape(width: int, height: int, *, rng: np.random.Generator) -> np.ndarray:
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    sky = (1 - rows) * np.array([40, 90, 170]) + rows * np.array([205, 225, 245])
    texture = _fractal_noise(width, height, rng=rng)[..., None]
    patches = _fractal_noise(width, height, rng=rng, octaves=(96, 192))[..., None]
    ground = np.array([80, 105, 45]) * (0.55 + 0.9 * texture)
    ground = ground * (1 - patches) + np.array([120, 95, 60]) * (0.6 + 0.8 * texture) * patches
    horizon = 0.45 * height + 25 * np.sin(np.arange(width) / 57.0)
    is_ground = (np.arange(height)[:, None] > horizon[None, :])[..., None]
    scene = np.where(is_ground, ground, np.broadcast_to(sky, (height, width, 3)))
    image = Image.fromarray(scene.clip(0, 255).astype(np.uint8))
    for _ in range(6):  # soft dark "trees" and light "clouds"
        x, y, r = (int(v) for v in rng.integers((0, 0, 20), (width, height, 60)))
        shade = (30, 60, 30) if y > 0.45 * height else (235, 238, 242)
        blob = Image.new("L", image.size, 0)
        blob.paste(255, (x - r, y - r, x + r, y + r))
        image.paste(shade, mask=blob.filter(ImageFilter.GaussianBlur(r / 3)))
    return np.asarray(image)


def _fractal_noise(
    width: int, height: int, *, rng: np.random.Generator, octaves: tuple[int, ...] = (8, 32, 128)
) -> np.ndarray:
    total = np.zeros((height, width))
    for weight, cell in enumerate(octaves, start=1):
        grid = rng.random((height // cell + 2, width // cell + 2)) * 255
        layer = Image.fromarray(grid.astype(np.uint8)).resize(
            (width + cell, height + cell), Image.Resampling.BICUBIC
        )
        total += np.asarray(layer, dtype=float)[:height, :width] / 255 * weight
    return total / sum(range(1, len(octaves) + 1))


def tiny_frames(root: Path | None) -> list[Image.Image]:
    from app.studies.schemas import ArmSpec
    from workers.pipelines import get_renderer

    arm = ArmSpec(
        name="lightning-4step",
        kind="animatediff-lightning",
        base_model="emilianJR/epiCRealism",
        motion_adapter="ByteDance/AnimateDiff-Lightning",
        steps=4,
        guidance_scale=1.0,
        num_frames=16,
        width=512,
        height=512,
        fps=FPS,
    )
    renderer = get_renderer(arm, tiny=True, device="cpu", tiny_root=root)
    return renderer.render(prompt="a lighthouse on a cliff at dusk", seed=7).frames


# --- metrics ---------------------------------------------------------------------------------


def psnr(reference: list[Image.Image], decoded: list[Image.Image]) -> float:
    errors = [_array(a) - _array(b) for a, b in zip(reference, decoded, strict=True)]
    mse = float(np.mean(np.square(errors)))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ssim(reference: list[Image.Image], decoded: list[Image.Image]) -> float:
    """Mean SSIM (Wang et al. 2004: luma, 11-tap Gaussian window, sigma 1.5) over all frames."""
    pairs = zip(reference, decoded, strict=True)
    return float(np.mean([_ssim_luma(_luma(a), _luma(b)) for a, b in pairs]))


def _ssim_luma(x: np.ndarray, y: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = _gaussian(x), _gaussian(y)
    var_x = _gaussian(x * x) - mu_x**2
    var_y = _gaussian(y * y) - mu_y**2
    cov = _gaussian(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float(np.mean(numerator / denominator))


def _gaussian(image: np.ndarray, *, sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    """Separable Gaussian filter, 'valid' region only (no padding effects)."""
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    size = 2 * radius + 1
    rows = sum(t * image[i : image.shape[0] - size + 1 + i] for i, t in enumerate(taps))
    return sum(t * rows[:, i : rows.shape[1] - size + 1 + i] for i, t in enumerate(taps))


def _luma(image: Image.Image) -> np.ndarray:
    return _array(image) @ np.array([0.299, 0.587, 0.114])


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


if __name__ == "__main__":
    main()
