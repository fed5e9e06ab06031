"""Gold twins: the pairs of a study's gold trials, made once from its own done clips.

For every done clip of a study with `[rating] gold_rate`, one gold pair per kind its criteria
can score (app/rating/gold.py):

* `frozen`: a GIF of the clip's middle frame held for the whole clip;
* `degraded`: the clip under a heavy Gaussian blur (no added noise: a blurred GIF is smaller than
  its original, so the pair's padding, to the larger clip's size class, hides it; a noised one is
  two to three times larger and would stand out by its size class);
* `mismatched`: no new media: the same arm's clip of the next prompt (in prompt order) that has
  one, shown with this clip's prompt.

A twin has the original's frame count, per-frame delays and size (encoded with
`app.clips.gif.encode_gif`, the delays copied), so neither its header nor its timing tells it
apart; a frozen twin's frames differ by a faint noise, which keeps the GIF encoder from merging
identical frames into one. It goes to storage under its content hash like any clip, and into
`gold_pair`, never `clip`: twins never enter matchups, clip counts, render panels or clips.csv.

Making a twin costs a decode, a filter and an encode (tens of milliseconds for a small clip), so
it never runs in a request: each web process makes the twins that are missing on its analysis
lane, every VIDARENA_STOP_CHECK_SECONDS, a bounded number at a time (`make_due`). Pairs are
inserted with ON CONFLICT DO NOTHING on (clip, kind), so processes racing make each pair once.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter, ImageSequence
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.clips.gif import encode_gif, gif_info
from app.clips.models import Clip, ClipStatus
from app.db import insert_new, utcnow
from app.rating import gold
from app.rating.enrollment import rating_spec
from app.rating.models import GoldKind, GoldPair
from app.storage import Storage
from app.studies.models import Prompt, Study, StudyStatus

log = logging.getLogger(__name__)

# Twins made per study in one `make_due` pass: bounds the time one pass holds a lane thread.
TWINS_PER_PASS = 32
_MEDIA_KINDS = (GoldKind.frozen, GoldKind.degraded)


def _frames(data: bytes) -> list[Image.Image]:
    with Image.open(io.BytesIO(data)) as image:
        return [frame.convert("RGB") for frame in ImageSequence.Iterator(image)]


def frozen_twin(data: bytes) -> bytes:
    """The clip frozen on its middle frame: same frames, delays and size as `data`."""
    info = gif_info(data)
    frames = _frames(data)
    still = np.asarray(frames[len(frames) // 2], dtype=np.int16)
    rng = np.random.default_rng(0)
    # A faint noise on a few pixels per frame (invisible: a few levels of 255 on one pixel in
    # a hundred) so that no two frames are equal: the encoder would merge equal frames, and the
    # frame count would give the twin away. Sparse, so the GIF compresses about as the clip.
    for amplitude in (3, 6, 12, 24):
        held = []
        for _ in frames:
            mask = rng.random(still.shape[:2]) < 0.01
            noise = rng.integers(-amplitude, amplitude + 1, still.shape) * mask[:, :, None]
            held.append(Image.fromarray(np.clip(still + noise, 0, 255).astype(np.uint8)))
        encoded = _encode(held, info)
        if gif_info(encoded)["frames"] == info["frames"]:
            return encoded
    raise ValueError("a frozen twin kept merging frames")  # pragma: no cover - noise differs


def degraded_twin(data: bytes) -> bytes:
    """The clip heavily blurred: same frames, delays and size as `data`, fewer bytes."""
    info = gif_info(data)
    radius = max(2.0, min(info["width"], info["height"]) / 24)
    degraded = [frame.filter(ImageFilter.GaussianBlur(radius)) for frame in _frames(data)]
    return _encode(degraded, info)


def _encode(frames: Sequence[Image.Image], info: dict[str, object]) -> bytes:
    durations = info["durations_ms"]
    assert isinstance(durations, list)
    # `fps` is required by the encoder's checks; the copied delays are what it writes.
    return encode_gif(frames, fps=25, durations_ms=durations)


TWIN_MAKERS = {GoldKind.frozen: frozen_twin, GoldKind.degraded: degraded_twin}


def make_twins(
    *, session: Session, storage: Storage, study: Study, limit: int | None = None
) -> int:
    """Make the study's missing gold pairs (at most `limit` new twin GIFs); returns how many
    pairs were made. Nothing when the study has no gold_rate. The caller commits."""
    if not rating_spec(study).gold_rate:
        return 0
    kinds = gold.usable_kinds(study.criterion_keys)
    clips = session.execute(
        select(Clip.id, Clip.prompt_id, Clip.arm_id, Clip.storage_key)
        .join(Prompt, Prompt.id == Clip.prompt_id)
        .where(Prompt.study_id == study.id, Clip.status == ClipStatus.done)
        .order_by(Clip.prompt_id, Clip.arm_id)
    ).all()
    made_pairs = {
        (clip_id, kind)
        for clip_id, kind in session.execute(
            select(GoldPair.clip_id, GoldPair.kind).where(GoldPair.study_id == study.id)
        )
    }
    now = utcnow()
    rows: list[dict[str, object]] = []
    if GoldKind.mismatched in kinds:
        by_arm: dict[int, list[tuple[int, int]]] = {}
        for clip in clips:
            by_arm.setdefault(clip.arm_id, []).append((clip.prompt_id, clip.id))
        for arm_clips in by_arm.values():
            for index, (prompt_id, clip_id) in enumerate(arm_clips):
                if len(arm_clips) < 2 or (clip_id, GoldKind.mismatched) in made_pairs:
                    continue
                other = arm_clips[(index + 1) % len(arm_clips)][1]
                rows.append(
                    {
                        "study_id": study.id,
                        "prompt_id": prompt_id,
                        "kind": GoldKind.mismatched,
                        "clip_id": clip_id,
                        "other_clip_id": other,
                        "created_at": now,
                    }
                )
    budget = limit if limit is not None else len(clips) * len(_MEDIA_KINDS)
    for clip in clips:
        for kind in _MEDIA_KINDS:
            if kind not in kinds or (clip.id, kind) in made_pairs or budget <= 0:
                continue
            assert clip.storage_key is not None  # a done clip has its media
            data = TWIN_MAKERS[kind](storage.read(clip.storage_key))
            info = gif_info(data)
            stored = storage.put(data, suffix=".gif")
            budget -= 1
            rows.append(
                {
                    "study_id": study.id,
                    "prompt_id": clip.prompt_id,
                    "kind": kind,
                    "clip_id": clip.id,
                    "other_clip_id": None,
                    "storage_key": stored.key,
                    "sha256": stored.sha256,
                    "size_bytes": stored.size,
                    "num_frames": info["frames"],
                    "width": info["width"],
                    "height": info["height"],
                    "created_at": now,
                }
            )
    return insert_new(session, GoldPair, rows, unique=["clip_id", "kind"])


def make_due(*, session_factory: sessionmaker[Session], storage: Storage) -> int:
    """Make the missing gold pairs of every open study with gold_rate, at most TWINS_PER_PASS
    twin GIFs per study, each study in its own transaction. Returns how many pairs were made."""
    with session_factory() as session:
        ids = session.scalars(
            select(Study.id).where(Study.status == StudyStatus.open).order_by(Study.id)
        ).all()
    made = 0
    for study_id in ids:
        with session_factory() as session:
            study = session.get(Study, study_id)
            if study is None or not rating_spec(study).gold_rate:
                continue
            count = make_twins(session=session, storage=storage, study=study, limit=TWINS_PER_PASS)
            session.commit()
        if count:
            log.info("gold pairs: %d made for study %s", count, study_id)
        made += count
    return made


__all__ = ["TWINS_PER_PASS", "degraded_twin", "frozen_twin", "make_due", "make_twins"]
