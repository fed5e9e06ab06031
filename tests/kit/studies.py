"""Studies as real rows in the real test database, no mocks: the founding example study, the
small study file (two arms, two prompts), and rating studies whose clips are done with small
GIFs in storage (arms named so that a blindness scan can find any leak)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.clips.models import Clip, ClipStatus
from app.config import Settings
from app.db import utcnow
from app.storage import Storage, get_storage
from app.studies import service as studies_service
from app.studies.models import Prompt, Study, StudyStatus
from app.studies.studyfile import load_study_file, parse_study
from tests.kit.media import gif_bytes
from tests.kit.paths import EXAMPLE_STUDY

SMALL_STUDY_TOML = """
name = "Small study"
slug = "{slug}"
prompts = "prompts.csv"

[render]
num_frames = 4
width = 64
height = 64
fps = 8

[[arms]]
name = "slow"
kind = "animatediff"
base_model = "emilianJR/epiCRealism"
motion_adapter = "guoyww/animatediff-motion-adapter-v1-5-2"
steps = 2
guidance_scale = 7.5

[[arms]]
name = "fast"
kind = "animatediff-lightning"
base_model = "emilianJR/epiCRealism"
motion_adapter = "ByteDance/AnimateDiff-Lightning"
steps = 1
guidance_scale = 1.0
"""

SMALL_PROMPTS_CSV = "prompt,theme,seed\na red fox running,wildlife,1\na city at night,urban,2\n"

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


def example_study(session: Session) -> Study:
    """The founding study (examples/lightning-vs-animatediff: 2 arms, 100 prompts), committed."""
    study = studies_service.create(session=session, draft=load_study_file(EXAMPLE_STUDY))
    session.commit()
    return study


def small_study(
    session: Session, *, slug: str = "small", prompts_csv: str = SMALL_PROMPTS_CSV
) -> Study:
    """The small study file (arms "slow" and "fast"), committed as a draft."""
    draft = parse_study(
        toml_text=SMALL_STUDY_TOML.format(slug=slug),
        toml_name="study.toml",
        prompts_bytes=prompts_csv.encode(),
        prompts_name="prompts.csv",
    )
    study = studies_service.create(session=session, draft=draft)
    session.commit()
    return study


def study_toml(
    *, slug: str, arms: int = 2, criteria: list[str] | None = None, rating: dict[str, Any]
) -> str:
    """A rating study file: the first `arms` of ARMS, `criteria` (default CRITERIA) and the
    `[rating]` settings given (None values left out)."""
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


def listed_study(
    session: Session,
    settings: Settings,
    *,
    slug: str,
    arms: Sequence[str],
    prompts: Sequence[str],
    criteria: Sequence[str],
    **rating: object,
) -> Study:
    """A committed open study like `rating_study`'s, its arms (names from ARMS), prompts (from
    PROMPT_TEXTS, each keeping its theme and seed) and criteria listed in the given order;
    clips done."""
    head, *blocks = study_toml(
        slug=slug, arms=len(ARMS), criteria=list(criteria), rating=rating
    ).split("[[arms]]\n")
    by_name = {block.split('"')[1]: block for block in blocks}
    toml = head + "".join("[[arms]]\n" + by_name[name] for name in arms)
    rows = ((text, PROMPT_TEXTS.index(text)) for text in prompts)
    csv = "prompt,theme,seed\n" + "".join(f"{t},theme{i % 3},{i + 1}\n" for t, i in rows)
    draft = parse_study(
        toml_text=toml,
        toml_name="study.toml",
        prompts_bytes=csv.encode(),
        prompts_name="prompts.csv",
    )
    study = studies_service.create(session=session, draft=draft)
    study.status = StudyStatus.open
    session.flush()
    mark_clips_done(session, settings, study)
    session.commit()
    return study


def study_clips(session: Session, study: Study) -> list[Clip]:
    """Every clip of the study, in id order."""
    return list(
        session.scalars(
            select(Clip)
            .join(Prompt, Prompt.id == Clip.prompt_id)
            .where(Prompt.study_id == study.id)
            .order_by(Clip.id)
        )
    )


def mark_clips_done(
    session: Session, settings: Settings, study: Study, *, prompt_ids: list[int] | None = None
) -> None:
    """Every clip of the study (or of the prompts `prompt_ids`) done, its `gif_bytes` stored."""
    clips = study_clips(session, study)
    if prompt_ids is not None:
        clips = [clip for clip in clips if clip.prompt_id in prompt_ids]
    store_clips(session, get_storage(settings), clips)


def store_clips(
    session: Session,
    storage: Storage,
    clips: Iterable[Clip],
    *,
    make_gif: Callable[[int], bytes] = gif_bytes,
    shape: tuple[int, int, int] = (4, 48, 48),
) -> list[int]:
    """Each clip done, `make_gif(clip.id)` stored as its GIF (`shape`: its frames, width and
    height); flushed. Returns the stored sizes in bytes."""
    sizes = []
    for clip in clips:
        stored = storage.put(make_gif(clip.id))
        sizes.append(stored.size)
        clip.status = ClipStatus.done
        clip.storage_key = stored.key
        clip.sha256 = stored.sha256
        clip.size_bytes = stored.size
        clip.num_frames, clip.width, clip.height = shape
        clip.finished_at = utcnow()
    session.flush()
    return sizes
