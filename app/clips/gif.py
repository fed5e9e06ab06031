"""Clip GIFs: one palette shared by every frame, an exact frame rate, nothing but pixels.

`encode_gif` builds one palette for the whole clip with libimagequant from a sample of its
pixels (about 2^18: every 4th pixel of each row and column of a 16 x 512² clip, on a grid shifted
from frame to frame so that the frames together cover every position), then gives every pixel its
nearest palette colour exactly (Euclidean in RGB, the distance PSNR measures): each distinct colour
of the clip is looked up once in a k-d tree, then every pixel through a table. One palette means no
colour flicker between frames; nearest colours without dithering give the highest PSNR at the
fewest bytes (docs/benchmarks.md). `dither` > 0 adds ordered (Bayer 8 x 8) dithering between each
pixel's nearest colour and the one across it: the same pattern in every frame, so a still
background does not shimmer. GIF stores delays in centiseconds, so frame durations are spread
(e.g. 130, 120, 130, ... ms at 8 fps) to keep the clip's running time exact.

`gif_info` validates bytes as a GIF and reads its frames, size, durations and loop count; the clip
importer uses it on uploaded files.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import imagequant
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageSequence
from scipy.spatial import cKDTree

# Browsers show delays of 0 or 1 cs as 100 ms, so 2 cs (50 fps) is the fastest honest rate.
MAX_FPS = 50
MAX_COLORS = 256
# The palette is built from about this many pixels of the clip (1/16 of a 16 x 512² clip): it
# took a sixth of the old whole-clip quantization's time at the same PSNR (docs/benchmarks.md).
PALETTE_SAMPLE = 1 << 18
# Up to this many pixels the clip's distinct colours are found by sorting; above it, through a
# table of all 2^24 colours (32 MiB while encoding), which is faster than a sort of millions.
_SORT_UP_TO = 1 << 20


def encode_gif(
    frames: Sequence[Image.Image],
    *,
    fps: int,
    dither: float = 0.0,
    durations_ms: Sequence[int] | None = None,
) -> bytes:
    """Encode frames as a looping GIF with one shared palette; the same frames give the same bytes.

    dither, 0.0 (none: the nearest colour, best PSNR and fewest bytes) to 1.0 (full ordered
    dithering: no banding on smooth gradients, at a cost in PSNR and bytes; docs/benchmarks.md).
    Consecutive identical frames are merged by Pillow into one longer frame (same running time).
    `durations_ms`: each frame's own duration instead of `fps`'s (a gold twin keeps those of the
    clip it is made from, app/rating/twins.py).
    """
    _check_encode_inputs(frames, fps=fps, dither=dither)
    if durations_ms is not None and len(durations_ms) != len(frames):
        raise ValueError(f"{len(durations_ms)} durations for {len(frames)} frames")
    paletted, palette = _quantize_together(frames, dither=dither)
    buffer = io.BytesIO()
    paletted[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=paletted[1:],
        duration=list(durations_ms or frame_durations_ms(len(frames), fps=fps)),
        loop=0,  # forever
        palette=palette,  # global colour table only: no per-frame tables
        # Pillow's optimize marks unchanged pixels transparent: measured 3-10% *larger* files.
        optimize=False,
    )
    return buffer.getvalue()


def frame_durations_ms(count: int, *, fps: int) -> list[int]:
    """Per-frame durations in whole centiseconds (as ms) keeping the running time exact.

    Frame i ends at round(100 * i / fps) cs, so the running time is within 5 ms of i * 1000 / fps
    at every frame, and the total is exact whenever 100 * count / fps is a whole number.
    """
    ends = [(200 * i + fps) // (2 * fps) for i in range(1, count + 1)]  # round half up
    return [10 * (end - start) for start, end in zip([0, *ends], ends, strict=False)]


def _check_encode_inputs(frames: Sequence[Image.Image], *, fps: object, dither: float) -> None:
    # fps is checked as a runtime value (a bool or float from an untyped caller is refused).
    if not frames:
        raise ValueError("no frames to encode")
    sizes = {frame.size for frame in frames}
    if len(sizes) != 1:
        raise ValueError(f"frames differ in size: {sorted(sizes)}")
    if isinstance(fps, bool) or not isinstance(fps, int) or not 1 <= fps <= MAX_FPS:
        raise ValueError(
            f"fps must be an integer in 1..{MAX_FPS} (GIF delays are centiseconds and browsers "
            f"slow delays under 20 ms to 100 ms), got {fps!r}"
        )
    if not 0.0 <= dither <= 1.0:
        raise ValueError(f"dither must be in 0.0..1.0, got {dither!r}")


def _quantize_together(
    frames: Sequence[Image.Image], *, dither: float
) -> tuple[list[Image.Image], bytes]:
    # RGBX: one little-endian 32-bit word per pixel, r | g << 8 | b << 16 once X is masked off.
    rgbx = np.stack([np.asarray(frame.convert("RGBX")) for frame in frames])
    rgb = rgbx[..., :3]
    colours = _shared_palette(rgb)
    tree = cKDTree(colours.astype(np.float64))
    indices = _nearest(_colour_keys(rgbx), tree)
    if dither > 0:
        indices = _ordered_dither(rgb, indices, colours, tree, strength=dither)
    palette = colours.tobytes()
    height, width = rgb.shape[1:3]
    paletted = []
    for frame_indices in indices:
        image = Image.frombytes("P", (width, height), frame_indices.tobytes())
        image.putpalette(palette, "RGB")
        paletted.append(image)
    return paletted, palette


def _shared_palette(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Up to MAX_COLORS colours for the whole clip, from about PALETTE_SAMPLE of its pixels."""
    count, height, width, _ = rgb.shape
    step = max(1, math.isqrt(count * height * width // PALETTE_SAMPLE))
    if height // step == 0 or width // step == 0:
        step = 1
    rows, columns = height // step, width // step
    # Frame i samples the grid shifted by (i // step, i) mod step: step² frames cover every pixel.
    sample = np.concatenate(
        [
            frame[(i // step) % step :: step, i % step :: step][:rows, :columns]
            for i, frame in enumerate(rgb)
        ]
    )
    rgba = np.full((*sample.shape[:2], 4), 255, dtype=np.uint8)
    rgba[..., :3] = sample
    # The raw-bytes call: quantize_pil_image copies pixels through a Python list (slow).
    _, rgba_palette = imagequant.quantize_raw_rgba_bytes(
        rgba.tobytes(), columns, rgba.shape[0], dithering_level=0.0, max_colors=MAX_COLORS
    )
    # imagequant's palette is RGBA; a GIF palette is RGB (an RGBA one decodes to garbage).
    return np.array(rgba_palette, dtype=np.uint8).reshape(-1, 4)[:, :3].copy()


def _colour_keys(rgbx: NDArray[np.uint8]) -> NDArray[np.uint32]:
    keys: NDArray[np.uint32] = rgbx.view("<u4")[..., 0] & np.uint32(0xFFFFFF)
    return keys


def _nearest(keys: NDArray[np.uint32], tree: cKDTree) -> NDArray[np.uint8]:
    """Each pixel's nearest palette index; every distinct colour is searched for once."""
    flat = keys.ravel()
    if flat.size <= _SORT_UP_TO:
        distinct, inverse = np.unique(flat, return_inverse=True)
        return _search(distinct, tree)[inverse].reshape(keys.shape)
    seen = np.zeros(1 << 24, dtype=np.bool_)
    seen[flat] = True
    distinct = np.flatnonzero(seen).astype(np.uint32)
    table = np.zeros(1 << 24, dtype=np.uint8)
    table[distinct] = _search(distinct, tree)
    return table[keys]


def _search(keys: NDArray[np.uint32], tree: cKDTree) -> NDArray[np.uint8]:
    points = np.stack([keys & 0xFF, (keys >> 8) & 0xFF, keys >> 16], axis=1).astype(np.float64)
    # Exact search (eps=0) on whole numbers: the same index on every machine, ties included.
    _, index = tree.query(points)
    return np.asarray(index, dtype=np.uint8)


def _ordered_dither(
    rgb: NDArray[np.uint8],
    nearest: NDArray[np.uint8],
    colours: NDArray[np.uint8],
    tree: cKDTree,
    *,
    strength: float,
) -> NDArray[np.uint8]:
    """Between each pixel's nearest colour and the colour across it (nearest to the pixel
    mirrored through its nearest colour), take the second where the pixel's Bayer threshold lies
    below its fraction of the way there times `strength`: at 1.0 the local mean is the pixel's."""
    palette = colours.astype(np.int32)
    first = palette[nearest]
    pixels = rgb.astype(np.int32)
    mirrored = np.zeros((*rgb.shape[:3], 4), dtype=np.uint8)
    mirrored[..., :3] = np.clip(2 * pixels - first, 0, 255)
    across = _nearest(_colour_keys(mirrored), tree)
    towards = palette[across] - first
    along = np.einsum("...c,...c->...", pixels - first, towards)
    length = np.einsum("...c,...c->...", towards, towards)
    fraction = np.where(length > 0, along / np.maximum(length, 1), 0.0) * strength
    height, width = rgb.shape[1:3]
    size = len(_BAYER)
    threshold = np.tile(_BAYER, (height // size + 1, width // size + 1))[:height, :width]
    return np.where(threshold < fraction, across, nearest).astype(np.uint8)


def _bayer(size: int) -> NDArray[np.float64]:
    """The Bayer threshold matrix of side `size` (a power of two), values (k + 0.5) / size²."""
    matrix = np.zeros((1, 1), dtype=np.int64)
    while len(matrix) < size:
        matrix = np.block([[4 * matrix, 4 * matrix + 2], [4 * matrix + 3, 4 * matrix + 1]])
    return (matrix + 0.5) / size**2


_BAYER = _bayer(8)


# --- reading ---------------------------------------------------------------------------------


@dataclass
class _Parsed:
    width: int = 0
    height: int = 0
    global_palette: bool = False
    durations_ms: list[int] = field(default_factory=list)
    local_palettes: int = 0
    loop: int | None = None
    comments: int = 0
    application_extensions: list[str] = field(default_factory=list)
    pending_delay_ms: int = 0


def gif_info(data: bytes) -> dict[str, Any]:
    """Validate `data` as a GIF and describe it; raise ValueError saying what is wrong otherwise.

    Returns frames, width, height, duration_ms (total), loop (0 = forever, None = plays once),
    plus durations_ms (per frame), global_palette, local_palettes, comments and
    application_extensions (e.g. ["NETSCAPE2.0"]) for checks on what a file carries.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if data[:6] not in (b"GIF87a", b"GIF89a"):
        raise ValueError(f"not a GIF: it starts with {data[:6]!r}, not b'GIF87a' or b'GIF89a'")
    try:
        parsed = _parse(data)
    except IndexError:
        raise ValueError("truncated GIF: the data ends inside a block") from None
    _decode_all(data)
    return {
        "frames": len(parsed.durations_ms),
        "width": parsed.width,
        "height": parsed.height,
        "duration_ms": sum(parsed.durations_ms),
        "loop": parsed.loop,
        "durations_ms": parsed.durations_ms,
        "global_palette": parsed.global_palette,
        "local_palettes": parsed.local_palettes,
        "comments": parsed.comments,
        "application_extensions": parsed.application_extensions,
    }


LOOP_EXTENSIONS = ("NETSCAPE2.0", "ANIMEXTS1.0")


def strip_metadata(data: bytes) -> bytes:
    """The same GIF without comments, plain-text blocks or application data other than the loop
    count: imported clips may carry tool names (XMP, comments) that would tell raters which
    pipeline made them. Pixels, palettes and frame timing are copied byte for byte."""
    gif_info(data)  # raises ValueError with a clear message when the data is not a good GIF
    packed = data[10]
    pos = 13 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)
    out = bytearray(data[:pos])
    while data[pos] != 0x3B:
        start = pos
        if data[pos] == 0x2C:
            pos = _read_image(data, pos + 1, _Parsed(width=1, height=1))
            out += data[start:pos]
            continue
        label = data[pos + 1]
        blocks, pos = _sub_blocks(data, pos + 2)
        keep = label == 0xF9 or (
            label == 0xFF and blocks and blocks[0][:11].decode("latin-1") in LOOP_EXTENSIONS
        )
        if keep:
            out += data[start:pos]
    out += b"\x3b"
    return bytes(out)


def _parse(data: bytes) -> _Parsed:
    """Walk the GIF block structure (GIF89a spec): header, screen, then blocks to the trailer."""
    parsed = _Parsed(width=_u16(data, 6), height=_u16(data, 8))
    if parsed.width == 0 or parsed.height == 0:
        raise ValueError(f"GIF has an empty screen: {parsed.width}x{parsed.height}")
    packed = data[10]
    parsed.global_palette = bool(packed & 0x80)
    pos = 13 + (3 * 2 ** ((packed & 7) + 1) if parsed.global_palette else 0)
    while True:
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:
            pos = _read_extension(data, pos + 1, parsed)
        elif block == 0x2C:
            pos = _read_image(data, pos + 1, parsed)
        else:
            raise ValueError(f"not a valid GIF: unknown block 0x{block:02x} at byte {pos}")
    if not parsed.durations_ms:
        raise ValueError("GIF has no frames")
    return parsed


def _read_extension(data: bytes, pos: int, parsed: _Parsed) -> int:
    label, pos = data[pos], pos + 1
    blocks, pos = _sub_blocks(data, pos)
    if label == 0xF9 and blocks and len(blocks[0]) >= 4:  # graphic control: delay in cs
        parsed.pending_delay_ms = 10 * _u16(blocks[0], 1)
    elif label == 0xFE:
        parsed.comments += 1
    elif label == 0xFF and blocks:
        name = blocks[0][:11].decode("latin-1")
        parsed.application_extensions.append(name)
        if name == "NETSCAPE2.0" and len(blocks) > 1 and len(blocks[1]) >= 3 and blocks[1][0] == 1:
            parsed.loop = _u16(blocks[1], 1)
    return pos


def _read_image(data: bytes, pos: int, parsed: _Parsed) -> int:
    packed = data[pos + 8]
    pos += 9
    if packed & 0x80:
        parsed.local_palettes += 1
        pos += 3 * 2 ** ((packed & 7) + 1)
    if not 2 <= data[pos] <= 11:
        raise ValueError(f"not a valid GIF: LZW code size {data[pos]} at byte {pos}")
    _, pos = _sub_blocks(data, pos + 1)
    parsed.durations_ms.append(parsed.pending_delay_ms)
    parsed.pending_delay_ms = 0
    return pos


def _sub_blocks(data: bytes, pos: int) -> tuple[list[bytes], int]:
    blocks = []
    while (size := data[pos]) != 0:
        if pos + 1 + size > len(data):
            raise IndexError(pos)
        blocks.append(data[pos + 1 : pos + 1 + size])
        pos += 1 + size
    return blocks, pos + 1


def _u16(data: bytes, pos: int) -> int:
    if pos + 2 > len(data):
        raise IndexError(pos)
    return data[pos] | data[pos + 1] << 8


def _decode_all(data: bytes) -> None:
    # The block walk does not check the compressed pixels; decoding every frame does.
    try:
        with Image.open(io.BytesIO(data), formats=["GIF"]) as image:
            for frame in ImageSequence.Iterator(image):
                frame.load()
    except (OSError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise ValueError(f"GIF pixel data does not decode: {exc}") from exc
