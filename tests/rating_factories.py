"""Factories for rating tests: studies whose clips are done, with real small GIFs in storage.

No render workers: each clip gets a distinct few-frame GIF made with Pillow (no metadata, no
comment), stored through the real storage backend, and the clip row is marked done.
"""

from __future__ import annotations

import io
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from PIL import Image, ImageDraw
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.clips.models import Clip, ClipStatus
from app.config import Settings
from app.db import utcnow
from app.rating import service as rating_service
from app.rating import tokens
from app.storage import get_storage
from app.studies import service as studies_service
from app.studies.models import Prompt, Study, StudyStatus
from app.studies.studyfile import parse_study

# Arms named so that a blindness scan can find any leak (and no prompt contains these words).
ARMS = [
    {
        "name": "zebra-arm",
        "kind": "animatediff",
        "base_model": "acme-labs/zz-base-model",
        "motion_adapter": "acme-labs/zz-motion-module",
        "steps": 37,
        "guidance_scale": 7.5,
        "scheduler": 'name = "ddim", beta_schedule = "linear"',
    },
    {
        "name": "quokka-arm",
        "kind": "animatediff-lightning",
        "base_model": "acme-labs/qq-base-model",
        "motion_adapter": "acme-labs/qq-lightning-repo",
        "steps": 8,
        "guidance_scale": 1.0,
        "scheduler": 'name = "euler", timestep_spacing = "trailing"',
    },
    {
        "name": "narwhal-arm",
        "kind": "animatediff",
        "base_model": "acme-labs/nn-base-model",
        "motion_adapter": "acme-labs/nn-motion-module",
        "steps": 19,
        "guidance_scale": 5.0,
        "scheduler": 'name = "ddim", timestep_spacing = "leading"',
    },
]
PROMPT_TEXTS = [
    "a red fox trotting through fresh snow",
    "waves rolling onto a pebble beach at dawn",
    "a paper boat drifting down a rainy gutter",
    "a hot air balloon rising over green hills",
    "a cat stretching on a sunny windowsill",
    "leaves swirling around a park bench in autumn",
    "a street musician playing violin at night",
    "a hummingbird hovering beside a red flower",
    "steam rising from a cup of coffee on a table",
    "a kite dancing in a blue sky above a field",
    "a candle flame flickering in a dark room",
    "a skateboarder gliding down an empty road",
]
CRITERIA = ["video_text_relevance", "motion_naturalness", "overall_quality"]


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


def study_toml(
    *, slug: str, arms: int = 2, criteria: list[str] | None = None, rating: dict[str, Any]
) -> str:
    lines = [
        f'name = "Rating test {slug}"',
        f'slug = "{slug}"',
        'prompts = "prompts.csv"',
        "criteria = [" + ", ".join(f'"{c}"' for c in (criteria or CRITERIA)) + "]",
        "[render]",
        "num_frames = 4",
        "width = 64",
        "height = 64",
        "fps = 8",
        "[rating]",
    ]
    for key, value in rating.items():
        if value is None:
            continue
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    for arm in ARMS[:arms]:
        lines += [
            "[[arms]]",
            f'name = "{arm["name"]}"',
            f'kind = "{arm["kind"]}"',
            f'base_model = "{arm["base_model"]}"',
            f'motion_adapter = "{arm["motion_adapter"]}"',
            f"steps = {arm['steps']}",
            f"guidance_scale = {arm['guidance_scale']}",
            f"scheduler = {{ {arm['scheduler']} }}",
        ]
    return "\n".join(lines) + "\n"


def rating_study(
    session: Session,
    settings: Settings,
    *,
    slug: str = "rating",
    prompts: int = 4,
    arms: int = 2,
    criteria: list[str] | None = None,
    status: StudyStatus = StudyStatus.open,
    done: bool = True,
    **rating: Any,
) -> Study:
    """A committed study with `prompts` prompts x `arms` arms; clips done with GIFs in storage."""
    csv = "prompt,theme,seed\n" + "".join(
        f"{text},theme{i % 3},{i + 1}\n" for i, text in enumerate(PROMPT_TEXTS[:prompts])
    )
    draft = parse_study(
        toml_text=study_toml(slug=slug, arms=arms, criteria=criteria, rating=rating),
        toml_name="study.toml",
        prompts_bytes=csv.encode(),
        prompts_name="prompts.csv",
    )
    study = studies_service.create(session=session, draft=draft)
    study.status = status
    session.flush()
    if done:
        mark_clips_done(session, settings, study)
    session.commit()
    return study


def mark_clips_done(
    session: Session, settings: Settings, study: Study, *, prompt_ids: list[int] | None = None
) -> None:
    storage = get_storage(settings)
    clips = session.scalars(
        select(Clip)
        .join(Prompt, Prompt.id == Clip.prompt_id)
        .where(Prompt.study_id == study.id)
        .order_by(Clip.id)
    )
    for clip in clips:
        if prompt_ids is not None and clip.prompt_id not in prompt_ids:
            continue
        data = gif_bytes(clip.id)
        stored = storage.put(data)
        clip.status = ClipStatus.done
        clip.storage_key = stored.key
        clip.sha256 = stored.sha256
        clip.size_bytes = stored.size
        clip.num_frames, clip.width, clip.height = 4, 48, 48
        clip.finished_at = utcnow()
    session.flush()


def link(settings: Settings, study: Study) -> str:
    """The study's evaluator path, `/r/<key>`."""
    return f"/r/{tokens.study_key(settings.resolved_secret_key(), study.id)}"


def invite_token(settings: Settings, study: Study) -> str:
    url = rating_service.new_invites(secret=settings.resolved_secret_key(), study=study, count=1)[0]
    return parse_qs(urlsplit(url).query)["invite"][0]


def all_left(study: Study) -> dict[str, str]:
    return dict.fromkeys(study.criterion_keys, "left")


MEDIA_URL = re.compile(r"/r/[^/]+/media/[A-Za-z0-9._-]+")
