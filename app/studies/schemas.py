"""Pydantic shapes of a study: what a study file holds and what the workers render from.

Pure pydantic (no database, no torch) so that the web app, the CLI and the render workers
validate arms the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

PipelineKind = Literal["animatediff", "animatediff-lightning"]
PIPELINE_KINDS: tuple[str, ...] = ("animatediff", "animatediff-lightning")
LIGHTNING_STEPS = (1, 2, 4, 8)
MAX_PROMPT_CHARS = 1000
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
KEY_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
PARAM_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
# What each pattern means, for error messages read by people who write study files.
PATTERN_WORDS: dict[str, str] = {
    SLUG_PATTERN: "use 1 to 63 lowercase letters, digits and hyphens, starting with a letter or "
    "digit (e.g. 'lightning-4step')",
    KEY_PATTERN: "use 1 to 63 lowercase letters, digits and underscores, starting with a letter "
    "(e.g. 'motion_quality')",
    PARAM_PATTERN: "use 1 to 64 letters, digits and underscores, not starting with a digit "
    "(e.g. 'PROLIFIC_PID')",
}
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
Key = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]


class Strict(BaseModel):
    """Unknown keys are mistakes in a study file, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Criterion(Strict):
    key: Key
    label: Annotated[str, StringConstraints(min_length=1, max_length=80, strip_whitespace=True)]
    question: Annotated[str, StringConstraints(min_length=1, max_length=300, strip_whitespace=True)]


# The six criteria of the Allegro user study that the founding study followed. Every question is
# phrased so that "better" means the same direction for every criterion.
DEFAULT_CRITERIA: tuple[Criterion, ...] = (
    Criterion(
        key="video_text_relevance",
        label="Video-text relevance",
        question="Which clip shows what the text describes more accurately?",
    ),
    Criterion(
        key="appearance_distortion",
        label="Appearance distortion",
        question="Which clip has fewer visual artifacts, deformed shapes or glitches?",
    ),
    Criterion(
        key="appearance_aesthetics",
        label="Appearance aesthetics",
        question="Which clip looks more appealing: composition, colour harmony, consistent style?",
    ),
    Criterion(
        key="motion_naturalness",
        label="Motion naturalness",
        question="Which clip moves more fluidly and believably?",
    ),
    Criterion(
        key="motion_amplitude",
        label="Motion amplitude",
        question="Which clip has a more appropriate, dynamic range of movement for the scene?",
    ),
    Criterion(
        key="overall_quality",
        label="Overall quality",
        question="All things considered, which clip is better?",
    ),
)


# Gold pairs (app/rating/gold.py): the criteria each kind of gold pair scores, among the default
# criteria; the original clip is the right answer on each. A study's own criteria are not scored.
GOLD_CRITERIA: dict[str, tuple[str, ...]] = {
    "frozen": ("motion_naturalness", "motion_amplitude"),
    "degraded": ("appearance_distortion", "appearance_aesthetics"),
    "mismatched": ("video_text_relevance",),
}


def gold_problem(gold_rate: float, criteria: Sequence[str]) -> str | None:
    """What is wrong with a study's gold_rate given its criteria (None: nothing): gold pairs
    score only the GOLD_CRITERIA, so a study with gold_rate needs one of them."""
    scorable = sorted({c for keys in GOLD_CRITERIA.values() for c in keys})
    if not gold_rate or any(c in scorable for c in criteria):
        return None
    return (
        f"rating.gold_rate: gold pairs score only the criteria {scorable}, and this study has "
        "none of them: add one to criteria, or remove gold_rate"
    )


class SchedulerSpec(Strict):
    """A diffusers scheduler and the config keys the arm overrides on it."""

    name: Literal["ddim", "euler"]
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    timestep_spacing: Literal["linspace", "leading", "trailing"] = "linspace"
    clip_sample: bool = False
    steps_offset: int = Field(default=1, ge=0, le=10)


DEFAULT_SCHEDULERS: dict[str, SchedulerSpec] = {
    # AnimateDiff model card: DDIM, linear betas, linspace spacing, no sample clipping.
    "animatediff": SchedulerSpec(
        name="ddim", beta_schedule="linear", timestep_spacing="linspace", clip_sample=False
    ),
    # AnimateDiff-Lightning model card: Euler, trailing spacing, linear betas.
    "animatediff-lightning": SchedulerSpec(
        name="euler", beta_schedule="linear", timestep_spacing="trailing", clip_sample=False
    ),
}


class RenderSpec(Strict):
    """Clip geometry shared by every arm of a study unless an arm overrides it, and whether the
    arms may end up differing in it (`arm_differences`)."""

    num_frames: int = Field(default=16, ge=1, le=128)
    width: int = Field(default=512, ge=16, le=2048, multiple_of=8)
    height: int = Field(default=512, ge=16, le=2048, multiple_of=8)
    fps: int = Field(default=8, ge=1, le=50)  # GIF delays under 20 ms play at 100 ms
    allow_arm_differences: bool = False


class ArmSpec(Strict):
    """One pipeline configuration. Never shown to evaluators.

    `base_model` and `motion_adapter` are Hugging Face model ids or local paths. For
    `animatediff-lightning`, `motion_adapter` is the repository holding the
    `animatediff_lightning_{N}step_diffusers.safetensors` checkpoints and N = `steps`.
    """

    name: Slug
    kind: PipelineKind
    base_model: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    motion_adapter: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    revision: str | None = None
    steps: int = Field(ge=1, le=200)
    guidance_scale: float = Field(ge=0.0, le=50.0)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    scheduler: SchedulerSpec | None = None
    num_frames: int = Field(ge=1, le=128)
    width: int = Field(ge=16, le=2048, multiple_of=8)
    height: int = Field(ge=16, le=2048, multiple_of=8)
    fps: int = Field(ge=1, le=50)

    @model_validator(mode="after")
    def _check_kind(self) -> ArmSpec:
        if self.kind == "animatediff-lightning" and self.steps not in LIGHTNING_STEPS:
            raise ValueError(
                f"animatediff-lightning has checkpoints for steps {LIGHTNING_STEPS}, "
                f"not {self.steps}: set steps to one of them"
            )
        return self

    @property
    def resolved_scheduler(self) -> SchedulerSpec:
        return self.scheduler or DEFAULT_SCHEDULERS[self.kind]

    @property
    def lightning_checkpoint(self) -> str:
        """File name of the Lightning motion-module state dict for this step count."""
        return f"animatediff_lightning_{self.steps}step_diffusers.safetensors"

    @property
    def denoiser_passes(self) -> int:
        """UNet evaluations per clip: classifier-free guidance doubles them."""
        return self.steps * (2 if self.guidance_scale > 1.0 else 1)


# The geometry an evaluator observes without judging the pixels (frame count, delays, size).
OBSERVABLE_GEOMETRY = ("num_frames", "fps", "width", "height")


def arm_differences(arms: Sequence[ArmSpec]) -> list[tuple[tuple[str | int, ...], str]]:
    """(location, message) for each OBSERVABLE_GEOMETRY value of an arm that differs from the
    first arm's: such arms are told apart without judging a pixel (docs/blinding.md)."""
    return [
        (
            ("arms", index, key),
            f"arm {arm.name!r} has {key} = {getattr(arm, key)}, arm {arms[0].name!r} has "
            f"{getattr(arms[0], key)}; evaluators tell arms apart by frame count, frame rate or "
            f"size without judging the video, so the study would not be blind. Give every arm "
            f"the same {key} (set it once in [render]), or set `allow_arm_differences = true` "
            "in [render] to run such a study knowingly",
        )
        for index, arm in enumerate(arms[1:], start=1)
        for key in OBSERVABLE_GEOMETRY
        if getattr(arm, key) != getattr(arms[0], key)
    ]


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:63].strip("-") or "study"


CODE_PLACEHOLDER = "{code}"
_EXAMPLE_COMPLETION_URL = "https://app.prolific.com/submissions/complete?cc={code}"


def check_completion_url(value: str) -> str:
    """A completion URL template: https, a host, `{code}` where the code goes, no other braces,
    no spaces or control characters. Raises ValueError saying what to change."""
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise ValueError(
            f"{value[:80]!r} is not an https:// address: write the full address evaluators are "
            f"sent to when they finish, e.g. {_EXAMPLE_COMPLETION_URL!r}"
        )
    if CODE_PLACEHOLDER not in value:
        raise ValueError(
            f"{value[:80]!r} has no {CODE_PLACEHOLDER} placeholder: write {CODE_PLACEHOLDER} "
            f"where the completion code goes, e.g. {_EXAMPLE_COMPLETION_URL!r}"
        )
    if "{" in value.replace(CODE_PLACEHOLDER, "") or "}" in value.replace(CODE_PLACEHOLDER, ""):
        raise ValueError(
            f"{value[:80]!r}: the only placeholder is {CODE_PLACEHOLDER} (lowercase, in single "
            "braces); remove any other brace"
        )
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"{value[:80]!r} contains spaces or control characters: remove them")
    return value


def completion_url(template: str, code: str) -> str:
    """The completion URL for one evaluator: `template` with the code, percent-encoded, in
    place of every `{code}`."""
    return template.replace(CODE_PLACEHOLDER, quote(code, safe=""))


__all__ = [
    "DEFAULT_CRITERIA",
    "DEFAULT_SCHEDULERS",
    "GOLD_CRITERIA",
    "LIGHTNING_STEPS",
    "MAX_PROMPT_CHARS",
    "PATTERN_WORDS",
    "PIPELINE_KINDS",
    "ArmSpec",
    "Criterion",
    "RenderSpec",
    "SchedulerSpec",
    "check_completion_url",
    "completion_url",
    "gold_problem",
    "slugify",
]
