"""Automatic per-clip measures, computed from a clip's GIF bytes so that rendered and imported
clips are measured the same way. For analysis beside the votes (clips.csv, the dashboard's
analysis), never shown to evaluators. docs/measures.md defines each one.

- `motion_mean`, `motion_std`: mean and standard deviation of the dense optical-flow magnitude
  (OpenCV Farnebäck) between consecutive frames, pooled over every pixel of every frame pair, in
  pixels per frame at the clip's own resolution.
- `flicker`: frame-to-frame change the flow does not explain: frame t warped by the flow onto
  frame t+1 at the clip's resolution, the mean absolute grey-level difference (0-255) over the
  pixels whose source lies inside frame t.
- `sharpness`: mean over frames of the variance of the Laplacian of the grey image.
- `colourfulness`: Hasler and Süsstrunk's colourfulness, mean over frames.

The flow is computed at a working size, the longer side at most FLOW_SIZE (128) pixels
(area-averaged), and scaled back to the clip's pixels (for flicker, resized to the clip's size).
That is for cost, and it is also more accurate: on photographs panned 1-24 px per frame at 512²,
the mean flow found at 128 px was within 3% of the truth, at 256 px 10-14% under it
(docs/measures.md). Sharpness and colourfulness use the full frames. GIFs merge identical
consecutive frames into one longer frame; the frames are expanded back by their durations (in
frame periods: the running time over the rendered frame count when known, else the shortest
frame), so a held frame counts as the still frames it was rendered as.

Each measure has a version: a change to its definition (or to the working size) bumps it, and
`vidarena clips measure SLUG` redoes the clips measured with an older one.
"""

from __future__ import annotations

import io
import itertools
import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageSequence

# cv2 is imported inside the functions that use it: the web app imports this module (for
# Measured, NAMES and VERSIONS) and has no use for OpenCV's 25 MB per process.

log = logging.getLogger(__name__)
FLOW_SIZE = 128  # the longer side of the frames the flow is computed on (pixels)
MOTION_VERSION = "1"
FLICKER_VERSION = "1"
SHARPNESS_VERSION = "1"
COLOURFULNESS_VERSION = "1"
VERSIONS: dict[str, str] = {
    "motion_mean": MOTION_VERSION,
    "motion_std": MOTION_VERSION,
    "flicker": FLICKER_VERSION,
    "sharpness": SHARPNESS_VERSION,
    "colourfulness": COLOURFULNESS_VERSION,
}
NAMES: tuple[str, ...] = tuple(VERSIONS)
# Farnebäck's parameters: pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags
# (OpenCV's sample values, with 4 pyramid levels for motions of tens of working pixels).
_FARNEBACK = (0.5, 4, 15, 3, 5, 1.2, 0)

Frame = NDArray[np.uint8]


@dataclass(frozen=True)
class Measured:
    """One measure's value (None: undefined for this clip) and its definition's version."""

    value: float | None
    version: str


def measure_gif(data: bytes, *, num_frames: int | None = None) -> dict[str, Measured]:
    """Every measure of a GIF, by name. Raises ValueError when the bytes do not decode.
    `num_frames`: how many frames the clip was rendered with, when known (see decode_frames)."""
    return measure_frames(decode_frames(data, num_frames=num_frames))


def decode_frames(data: bytes, *, num_frames: int | None = None) -> list[Frame]:
    """The GIF's frames as RGB arrays (height, width, 3), held frames repeated: each frame
    counts as its duration over the frame period, which is the running time over `num_frames`
    when the caller knows how many frames were rendered, else the shortest frame's duration."""
    frames: list[Frame] = []
    durations: list[int] = []
    try:
        with Image.open(io.BytesIO(data), formats=["GIF"]) as image:
            for frame in ImageSequence.Iterator(image):
                frames.append(np.asarray(frame.convert("RGB"), dtype=np.uint8))
                durations.append(int(frame.info.get("duration", 0) or 0))
    except (OSError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise ValueError(f"GIF does not decode: {exc}") from exc
    if not frames:
        raise ValueError("GIF has no frames")
    unit: float = min((d for d in durations if d > 0), default=0)
    if num_frames and sum(durations) > 0:
        unit = sum(durations) / num_frames
    if not unit:
        return frames
    return [f for f, d in zip(frames, durations, strict=True) for _ in range(_repeats(d, unit))]


def _repeats(duration: int, unit: float) -> int:
    return max(1, round(duration / unit))


def measure_frames(frames: list[Frame]) -> dict[str, Measured]:
    """The measures of RGB frames (height, width, 3, uint8), all of one size."""
    if not frames:
        raise ValueError("no frames to measure")
    greys: list[Frame] = []
    for frame in frames:  # a held frame is one array repeated: converted once
        same = greys and frame is frames[len(greys) - 1]
        greys.append(greys[-1] if same else _grey(frame))
    motion_mean, motion_std, flicker = _motion_and_flicker(greys)
    values = {
        "motion_mean": motion_mean,
        "motion_std": motion_std,
        "flicker": flicker,
        "sharpness": float(np.mean([_sharpness(g) for g in greys])),
        "colourfulness": float(np.mean([colourfulness(f) for f in frames])),
    }
    return {name: Measured(_finite(value), VERSIONS[name]) for name, value in values.items()}


def _grey(rgb: Frame) -> Frame:
    import cv2

    return np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), dtype=np.uint8)


def _finite(value: float | None) -> float | None:
    return value if value is not None and np.isfinite(value) else None


def _working(grey: Frame) -> tuple[Frame, float]:
    """The frame at the working size and the factor from working to clip pixels."""
    import cv2

    height, width = grey.shape
    scale = FLOW_SIZE / max(height, width)
    if scale >= 1:
        return grey, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(cv2.resize(grey, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    return small, width / size[0]


def _motion_and_flicker(greys: list[Frame]) -> tuple[float, float, float]:
    """(motion mean, motion std, flicker); all 0 for a single frame (nothing moves)."""
    import cv2

    if len(greys) < 2:
        return 0.0, 0.0, 0.0
    resized: dict[int, tuple[Frame, float]] = {}
    for grey in greys:  # a held frame is one array repeated: resized once
        if id(grey) not in resized:
            resized[id(grey)] = _working(grey)
    factor = resized[id(greys[0])][1]
    height, width = greys[0].shape
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    total, total_sq, residuals = 0.0, 0.0, []
    for before, after in itertools.pairwise(greys):
        if before is after:  # a held frame: no motion, nothing to explain
            residuals.append(0.0)
            continue
        small_before, small_after = resized[id(before)][0], resized[id(after)][0]
        # Where each pixel of `after` came from in `before`, in working pixels.
        flow = np.asarray(
            cv2.calcOpticalFlowFarneback(small_after, small_before, None, *_FARNEBACK),
            dtype=np.float32,
        )
        magnitude = np.hypot(flow[..., 0], flow[..., 1], dtype=np.float64)
        total += float(magnitude.sum())
        total_sq += float(np.square(magnitude).sum())
        residuals.append(_residual(before, after, flow * factor, xs, ys))
    count = (len(greys) - 1) * resized[id(greys[0])][0].size  # held pairs count as still
    mean = total / count
    variance = max(0.0, total_sq / count - mean * mean)
    return mean * factor, float(np.sqrt(variance)) * factor, float(np.mean(residuals))


def _residual(
    before: Frame,
    after: Frame,
    flow: NDArray[np.float32],
    xs: NDArray[np.float32],
    ys: NDArray[np.float32],
) -> float:
    """Mean absolute grey difference between `after` and `before` warped onto it by `flow` (in
    clip pixels, upsampled to the clip's size when computed smaller), over the pixels whose
    source lies inside `before`."""
    import cv2

    height, width = before.shape
    if flow.shape[:2] != (height, width):
        flow = np.asarray(
            cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR), dtype=np.float32
        )
    map_x, map_y = xs + flow[..., 0], ys + flow[..., 1]
    warped = cv2.remap(before, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    if not inside.any():
        return 0.0
    # Bilinear interpolation of uint8 grey values rounds to whole levels (as a warp to an image
    # would); the difference is taken on those.
    diff = cv2.absdiff(after, np.asarray(warped, dtype=np.uint8))
    return float(cv2.mean(diff, mask=inside.view(np.uint8))[0])


def _sharpness(grey: Frame) -> float:
    import cv2

    _, std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_32F))
    return float(std[0, 0]) ** 2


def colourfulness(rgb: Frame) -> float:
    """Hasler and Süsstrunk (2003): sigma_rgyb + 0.3 mu_rgyb over rg = R - G and
    yb = (R + G) / 2 - B, on 0-255 values."""
    import cv2

    r, g, b = cv2.split(rgb.astype(np.float32))
    rg = cv2.subtract(r, g)
    yb = cv2.subtract(cv2.addWeighted(r, 0.5, g, 0.5, 0.0), b)
    (mean_rg,), (std_rg,) = cv2.meanStdDev(rg)
    (mean_yb,), (std_yb,) = cv2.meanStdDev(yb)
    sigma = np.sqrt(float(std_rg[0]) ** 2 + float(std_yb[0]) ** 2)
    mu = np.sqrt(float(mean_rg[0]) ** 2 + float(mean_yb[0]) ** 2)
    return float(sigma + 0.3 * mu)


def measure_or_none(data: bytes, *, num_frames: int | None = None) -> dict[str, Measured]:
    """measure_gif for the render worker and importer: {} (logged) when measuring fails, so a
    clip is never lost to its measures; `vidarena clips measure SLUG` fills the gap later."""
    try:
        return measure_gif(data, num_frames=num_frames)
    except Exception:
        log.exception("could not measure a clip (%d bytes)", len(data))
        return {}
