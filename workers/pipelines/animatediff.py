"""AnimateDiff: a motion adapter on an SD1.5 base, as its model card prescribes.

    adapter = MotionAdapter.from_pretrained("guoyww/animatediff-motion-adapter-v1-5-2")
    pipe = AnimateDiffPipeline.from_pretrained("emilianJR/epiCRealism", motion_adapter=adapter)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, beta_schedule="linear",
                                               clip_sample=False, timestep_spacing="linspace",
                                               steps_offset=1)
    # 25 steps, guidance 7.5 (classifier-free guidance: two UNet passes per step)

The scheduler is the arm's (`arm.resolved_scheduler`, DDIM as above by default); `get_renderer`
puts it on the pipeline returned here.
"""

from __future__ import annotations

import torch
from diffusers.models.unets.unet_motion_model import MotionAdapter  # see base.py's imports
from diffusers.pipelines.animatediff.pipeline_animatediff import AnimateDiffPipeline

from app.studies.schemas import ArmSpec
from workers.pipelines.base import ModelSources, pretrained_kwargs, weights_errors

KIND = "animatediff"


def check_inputs(arm: ArmSpec) -> None:
    if arm.kind != KIND:
        raise ValueError(f"arm {arm.name!r} has kind {arm.kind!r}, not {KIND!r}")


def load(sources: ModelSources, *, dtype: torch.dtype) -> AnimateDiffPipeline:
    """Load the weights (on the CPU; the caller moves them). The scheduler is the base model's."""
    # 1. The motion adapter, pinned to the arm's revision when it has one.
    with weights_errors(sources.motion_adapter):
        kwargs = pretrained_kwargs(sources.motion_adapter, revision=sources.revision)
        adapter = MotionAdapter.from_pretrained(**kwargs, dtype=dtype)
    # 2. The SD1.5 base; the pipeline turns its UNet into a UNetMotionModel with the adapter.
    with weights_errors(sources.base_model):
        kwargs = pretrained_kwargs(sources.base_model)
        return AnimateDiffPipeline.from_pretrained(**kwargs, motion_adapter=adapter, dtype=dtype)
