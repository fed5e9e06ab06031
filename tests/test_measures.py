"""Per-clip measures (app/clips/measures.py) on synthetic clips whose truth is known, and their
storage: one row per clip and name, upserted, read back per study."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import delete, select

from app.clips import service as clips_service
from app.clips.gif import encode_gif
from app.clips.measures import (
    NAMES,
    VERSIONS,
    Measured,
    colourfulness,
    decode_frames,
    measure_frames,
    measure_gif,
)
from app.clips.models import Clip, ClipMeasure, ClipStatus
from tests.kit.studies import rating_study, study_clips

SIZE = 512


def texture(seed: int = 0, size: int = 800) -> np.ndarray:
    """Smooth colour noise (blurred, stretched to 0-255): something optical flow can follow."""
    rng = np.random.default_rng(seed)
    noise = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    blurred = cv2.GaussianBlur(noise, (0, 0), 3)
    return cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX)


def translated(k: float, *, frames: int = 16, size: int = SIZE, dy: int = 0) -> list[np.ndarray]:
    """A window sliding over the texture by k pixels per frame to the right (dy down)."""
    image = texture()
    out = []
    for t in range(frames):
        x, y = 20 + round(k * t), 20 + dy * t
        out.append(np.ascontiguousarray(image[y : y + size, x : x + size]))
    return out


def values(frames: list[np.ndarray]) -> dict[str, float]:
    measured = measure_frames(frames)
    assert set(measured) == set(NAMES)
    assert all(m.version == VERSIONS[name] for name, m in measured.items())
    out = {name: m.value for name, m in measured.items()}
    assert all(v is not None for v in out.values())
    return out  # type: ignore[return-value]


@pytest.mark.parametrize("k", [0, 2, 4, 8, 16])
def test_motion_mean_is_the_translation_in_pixels_per_frame(k):
    got = values(translated(k))
    assert got["motion_mean"] == pytest.approx(k, abs=0.05 + 0.02 * k)
    # Every pixel moves the same: the spread is small next to the motion.
    assert got["motion_std"] < 0.05 + 0.02 * k
    # Flow explains a pure translation: nothing left over.
    assert got["flicker"] < 0.5


def test_diagonal_motion_has_its_length():
    got = values(translated(3, dy=4))
    assert got["motion_mean"] == pytest.approx(5.0, abs=0.15)


def test_a_static_clip_has_no_motion_and_no_flicker():
    got = values(translated(0))
    assert got["motion_mean"] == pytest.approx(0, abs=0.01)
    assert got["flicker"] == pytest.approx(0, abs=0.01)


def test_gain_flicker_is_flicker_not_motion():
    frames = translated(0)
    flickering = [
        np.clip(f.astype(np.float64) * (0.8 if t % 2 else 1.0), 0, 255).astype(np.uint8)
        for t, f in enumerate(frames)
    ]
    steady, flicker = values(frames), values(flickering)
    assert flicker["flicker"] > 10  # grey levels: about a fifth of the mean brightness
    assert steady["flicker"] < 0.1
    assert flicker["motion_mean"] < 0.2


def test_motion_half_the_clip_has_spread():
    # Left half still, right half moving 6 px/frame: mean about 3, spread about 3.
    still, moving = translated(0), translated(6)
    frames = [
        np.ascontiguousarray(np.concatenate([s[:, : SIZE // 2], m[:, SIZE // 2 :]], axis=1))
        for s, m in zip(still, moving, strict=True)
    ]
    got = values(frames)
    assert got["motion_mean"] == pytest.approx(3, abs=0.4)
    assert got["motion_std"] == pytest.approx(3, abs=0.5)


def test_blur_lowers_sharpness():
    sharp = translated(2)
    blurred = [cv2.GaussianBlur(f, (0, 0), 2) for f in sharp]
    assert values(blurred)["sharpness"] < 0.5 * values(sharp)["sharpness"]


def test_grey_has_no_colourfulness_and_colour_has_some():
    colour = translated(0, frames=2)
    grey = [np.repeat(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2) for f in colour]
    assert values(grey)["colourfulness"] == pytest.approx(0, abs=1e-9)
    assert values(colour)["colourfulness"] > 10


def test_colourfulness_is_hasler_and_susstrunk():
    # Half pure red, half pure blue: rg is 255 or 0, yb is 127.5 or -255.
    frame = np.zeros((4, 4, 3), dtype=np.uint8)
    frame[:2, :, 0] = 255
    frame[2:, :, 2] = 255
    rg, yb = np.array([255.0, 0.0]), np.array([127.5, -255.0])
    expected = np.sqrt(rg.var() + yb.var()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    assert colourfulness(frame) == pytest.approx(expected)


def test_a_gif_is_measured_like_its_frames():
    frames = translated(4, frames=8)
    data = encode_gif([Image.fromarray(f) for f in frames], fps=8, dither=0.0)
    from_gif, direct = values(decode_frames(data)), values(frames)
    assert from_gif["motion_mean"] == pytest.approx(direct["motion_mean"], abs=0.1)
    assert measure_gif(data)["motion_mean"].value == pytest.approx(4, abs=0.15)


def test_held_frames_count_as_still_frames():
    # The GIF encoder merges identical frames into one longer one; decoding expands it again,
    # so a clip that holds each frame for two moves half as much per frame.
    frames = translated(4, frames=8)
    held = [f for f in frames[:4] for _ in range(2)]
    data = encode_gif([Image.fromarray(f) for f in held], fps=8, dither=0.0)
    # Every frame held: the frame period is known only from the rendered frame count.
    assert len(decode_frames(data)) == 4
    assert len(decode_frames(data, num_frames=8)) == 8
    got = measure_gif(data, num_frames=8)["motion_mean"].value
    assert got == pytest.approx(4 * 3 / 7, abs=0.15)  # 3 moves of 4 px over 7 frame steps
    # One frame not held: its duration is the period.
    data = encode_gif([Image.fromarray(f) for f in [*held, frames[4]]], fps=8, dither=0.0)
    assert len(decode_frames(data)) == 9
    assert measure_gif(data)["motion_mean"].value == pytest.approx(4 * 4 / 8, abs=0.15)


def test_one_frame_has_no_motion():
    got = values(translated(0, frames=1))
    assert got["motion_mean"] == got["motion_std"] == got["flicker"] == 0


def test_bytes_that_are_not_a_gif_are_refused():
    with pytest.raises(ValueError, match="does not decode"):
        measure_gif(b"GIF89a not really")


# --- storage ---------------------------------------------------------------------------------


def test_measures_are_stored_once_per_name_and_read_per_study(session, settings):
    study = rating_study(session, settings, slug="measured", prompts=2)
    other = rating_study(session, settings, slug="other", prompts=1)
    clips = study_clips(session, study)
    first, second = clips[0].id, clips[1].id
    clips_service.record_measures(
        session=session,
        clip_id=first,
        measures={"motion_mean": Measured(1.5, "1"), "flicker": Measured(None, "1")},
    )
    clips_service.record_measures(
        session=session, clip_id=second, measures={"motion_mean": Measured(0.5, "1")}
    )
    other_clip = study_clips(session, other)[0].id
    clips_service.record_measures(
        session=session, clip_id=other_clip, measures={"motion_mean": Measured(9.0, "1")}
    )
    session.commit()
    # Again, with a new version and value: replaced, not added.
    clips_service.record_measures(
        session=session,
        clip_id=first,
        measures={"motion_mean": Measured(2.5, "2"), "sharpness": Measured(10.0, "1")},
    )
    session.commit()
    rows = session.execute(
        select(ClipMeasure.name, ClipMeasure.value, ClipMeasure.version).where(
            ClipMeasure.clip_id == first
        )
    ).all()
    assert sorted(rows) == [
        ("flicker", None, "1"),
        ("motion_mean", 2.5, "2"),
        ("sharpness", 10.0, "1"),
    ]
    got = clips_service.measures_for_study(session=session, study_id=study.id)
    assert got == {first: {"motion_mean": 2.5, "sharpness": 10.0}, second: {"motion_mean": 0.5}}
    # Only done clips count.
    session.get(Clip, second).status = ClipStatus.failed
    session.commit()
    assert set(clips_service.measures_for_study(session=session, study_id=study.id)) == {first}
    # Deleting a clip deletes its measures.
    session.execute(delete(Clip).where(Clip.id == first))
    session.commit()
    assert (
        session.scalars(select(ClipMeasure.clip_id).where(ClipMeasure.clip_id == first)).all() == []
    )


def test_clips_to_measure_are_those_missing_a_measure_or_its_version(session, settings):
    study = rating_study(session, settings, slug="backlog", prompts=2)
    a, b, c, d = (clip.id for clip in study_clips(session, study))
    current = {name: Measured(1.0, version) for name, version in VERSIONS.items()}
    clips_service.record_measures(session=session, clip_id=a, measures=current)
    older = {**current, "flicker": Measured(1.0, "0")}
    clips_service.record_measures(session=session, clip_id=b, measures=older)
    partial = {"motion_mean": current["motion_mean"]}
    clips_service.record_measures(session=session, clip_id=c, measures=partial)
    session.commit()
    todo = clips_service.clips_to_measure(session=session, study=study, versions=VERSIONS)
    assert [t.clip_id for t in todo] == [b, c, d]
    assert all(t.storage_key and t.num_frames == 4 for t in todo)  # rendered: frames known
    forced = clips_service.clips_to_measure(
        session=session, study=study, versions=VERSIONS, force=True
    )
    assert [t.clip_id for t in forced] == [a, b, c, d]


def test_the_web_app_does_not_load_opencv():
    """Only measuring needs OpenCV (25 MB per process): importing the app leaves it unloaded."""
    import subprocess
    import sys

    code = "import sys, app.main, app.cli, app.exports.service; print('cv2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("k", [2, 9])
def test_motion_on_photographs_panned_by_a_known_amount(k):
    """Natural images (scikit-image's photographs), panned k px per frame at 512²: the flow at
    the 128-pixel working size finds the pan within 5% (docs/measures.md)."""
    from skimage import data as photos

    for name in ("astronaut", "coffee"):
        image = photos.astronaut() if name == "astronaut" else photos.coffee()
        scale = max(SIZE / image.shape[0], (SIZE + 6 * k + 2) / image.shape[1])
        size = (int(image.shape[1] * scale) + 1, int(image.shape[0] * scale) + 1)
        big = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
        frames = [np.ascontiguousarray(big[:SIZE, t * k : t * k + SIZE]) for t in range(6)]
        assert values(frames)["motion_mean"] == pytest.approx(k, rel=0.05), name
