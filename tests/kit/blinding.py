"""Studies whose arms leak through their clips' bytes alone: every clip has the same frames,
size, delays and palette (256 entries), but the arms draw different amounts of noise, so one
arm's GIFs are systematically bigger (what a few-step pipeline's smoother clips do to their
size). Simulated evaluators then rate them through the real rating flow, so the trials exist."""

from __future__ import annotations

import io
import random

from PIL import Image
from sqlalchemy.orm import Session

from app.config import Settings
from app.rating import matchups
from app.storage import get_storage
from app.studies.models import Study
from tests.kit.studies import rating_study, store_clips, study_clips
from tests.kit.votes import cast_votes

# Noise pixels per frame drawn by the arm at each position: sizes about 4.0, 5.5 and 4.8 KB.
NOISE = ((20, 120), (150, 400), (90, 200))
PALETTE = [value for i in range(256) for value in (i, (i * 7) % 256, 255 - i)]


def arm_gif(seed: int, *, noise: tuple[int, int], frames: int = 4, size: int = 48) -> bytes:
    """A GIF of `frames` frames of `size` px at 125 ms, a 256-entry palette, a flat background
    and a random number (in `noise`) of random pixels per frame."""
    rng = random.Random(seed)
    images = []
    for _ in range(frames):
        image = Image.new("P", (size, size), rng.randrange(256))
        image.putpalette(PALETTE)
        pixels = image.load()
        assert pixels is not None
        for _ in range(rng.randrange(*noise)):
            pixels[rng.randrange(size), rng.randrange(size)] = rng.randrange(256)
        images.append(image)
    out = io.BytesIO()
    images[0].save(
        out, format="GIF", save_all=True, append_images=images[1:], duration=125, loop=0,
        optimize=False,
    )  # fmt: skip
    return out.getvalue()


def leaky_study(
    session: Session,
    settings: Settings,
    *,
    slug: str = "leaky",
    prompts: int = 12,
    arms: int = 3,
    evaluators: int = 3,
) -> Study:
    """A committed open study whose arms differ only in their clips' bytes (NOISE per arm
    position); `evaluators` simulated evaluators rate until done."""
    study = rating_study(
        session, settings, slug=slug, prompts=prompts, arms=arms, done=False, open_enrollment=True
    )
    position = {arm.id: index for index, arm in enumerate(study.arms)}
    clips = study_clips(session, study)
    noise = {clip.id: NOISE[position[clip.arm_id]] for clip in clips}
    store_clips(
        session,
        get_storage(settings),
        clips,
        make_gif=lambda clip_id: arm_gif(clip_id, noise=noise[clip_id]),
        shape=(4, 48, 48),
    )
    matchups.ensure_matchups(session=session, study=study)
    session.commit()
    rates = dict.fromkeys(study.criterion_keys, 0.6)
    cast_votes(
        session, settings, study, favored=study.arms[0].name, rates=rates, evaluators=evaluators
    )
    session.rollback()
    return study
