"""Natural photographs moved as a diffusion model's frames move, for the GIF encoder's tests and
benchmarks/gif.py: scikit-image's bundled photos (no download) under a slow zoom, a pan, a slight
rotation, a non-rigid wobble, a gain flicker and a little noise, all drawn from a seed."""

from __future__ import annotations

import numpy as np
import skimage.data
from PIL import Image
from scipy import ndimage

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def moving_photo(
    name: str,
    *,
    frames: int = 16,
    size: int = 512,
    seed: int = 0,
    noise: float = 1.5,
    flicker: float = 0.02,
) -> list[Image.Image]:
    """`frames` RGB frames of `size`² from skimage.data.`name`, each a little moved from the last.

    Over the clip: a zoom of 4-10% in or out, a pan of up to 6% of the frame, a rotation of up to
    3 degrees, a wobble displacing pixels by up to 2.5 px in a slowly drifting wave (non-rigid),
    a gain flicker of ±`flicker` plus a random third of that, and Gaussian noise of `noise` grey
    levels (new in every frame, as the grain of decoded latents is).
    """
    rng = np.random.default_rng(seed)
    photo = np.asarray(getattr(skimage.data, name)())
    if photo.ndim == 2:
        photo = np.stack([photo] * 3, axis=-1)
    height, width = photo.shape[:2]
    scale = 1.3 * size / min(height, width)  # room to move without running off the photo
    resized = Image.fromarray(photo[..., :3]).resize(
        (round(width * scale), round(height * scale)), Image.Resampling.LANCZOS
    )
    source = np.asarray(resized, dtype=np.float32)
    centre_y, centre_x = source.shape[0] / 2, source.shape[1] / 2
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) - size / 2
    pan = rng.uniform(-1, 1, 2) * 0.06 * size / max(frames - 1, 1)
    zoom = rng.uniform(0.04, 0.1) * rng.choice([-1, 1])
    rotation = np.deg2rad(rng.uniform(-3, 3))
    wave_x, wave_y = rng.uniform(1.5, 3.5, 2) * 2 * np.pi / size
    phase = rng.uniform(0, 2 * np.pi, 4)
    clip = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        angle, magnify = rotation * t, 1 + zoom * t
        cos, sin = np.cos(angle) / magnify, np.sin(angle) / magnify
        amplitude = 2.5 * np.sin(2 * np.pi * t + phase[0])
        wobble_y = amplitude * np.sin(wave_x * x + phase[1] + 1.3 * t)
        wobble_x = amplitude * np.sin(wave_y * y + phase[2] - 0.9 * t)
        source_y = cos * y - sin * x + centre_y + pan[0] * i + wobble_y
        source_x = sin * y + cos * x + centre_x + pan[1] * i + wobble_x
        warped = np.stack(
            [
                ndimage.map_coordinates(
                    source[..., c], [source_y, source_x], order=1, mode="nearest"
                )
                for c in range(3)
            ],
            axis=-1,
        )
        gain = 1 + flicker * np.sin(2 * np.pi * 1.7 * t + phase[3]) + rng.normal(0, flicker / 3)
        pixels = warped * gain + rng.normal(0, noise, warped.shape)
        clip.append(Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)))
    return clip
