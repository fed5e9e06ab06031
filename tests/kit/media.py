"""GIF bytes for clips that no render worker made, each distinct per seed and holding nothing but
pixels and timing:

- `gif_bytes`: a bright bar moving over a flat colour, a few hundred bytes (rating tests);
- `noise_gif_bytes`: random pixels, which weigh what a tiny render does (~65 KB at the default
  16 frames of 64x64; the load benchmark);
- `encoded_gif_bytes`: random pixels through the app's own encoder (fps-exact frame delays), as
  clips rendered elsewhere and imported arrive.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw


def gif_bytes(seed: int, *, frames: int = 4, size: int = 48) -> bytes:
    """A small animated GIF, distinct per seed, with nothing in it but pixels and timing."""
    images = []
    for frame in range(frames):
        image = Image.new("RGB", (size, size), ((seed * 53) % 256, (seed * 97) % 256, 140))
        draw = ImageDraw.Draw(image)
        x = (frame * size // frames + seed * 5) % size
        draw.rectangle(
            [x, size // 4, min(x + size // 4, size - 1), size // 2], fill=(250, 250, 250)
        )
        images.append(image)
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=120, loop=0)
    return out.getvalue()


def noise_gif_bytes(seed: int, *, frames: int = 16, size: int = 64) -> bytes:
    """A distinct 16-frame 64x64 GIF (noise, so it weighs what a tiny render does: ~65 KB)."""
    rng = random.Random(seed)
    images = [
        Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3)).quantize(64)
        for _ in range(frames)
    ]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=125)
    return out.getvalue()


def encoded_gif_bytes(seed: int, *, frames: int = 4, size: int = 32, fps: int = 8) -> bytes:
    """Random frames encoded by the app's GIF encoder (4 frames of 32x32 at 8 fps: 500 ms)."""
    import numpy as np

    from app.clips.gif import encode_gif

    rng = np.random.default_rng(seed)
    images = [
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        for _ in range(frames)
    ]
    return encode_gif(images, fps=fps)
