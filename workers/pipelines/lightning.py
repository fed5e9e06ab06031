"""AnimateDiff-Lightning: a distilled motion module for 1, 2, 4 or 8 steps, as its model card
prescribes.

    adapter = MotionAdapter()
    adapter.load_state_dict(load_file(hf_hub_download("ByteDance/AnimateDiff-Lightning",
                                      "animatediff_lightning_4step_diffusers.safetensors")))
    pipe = AnimateDiffPipeline.from_pretrained("emilianJR/epiCRealism", motion_adapter=adapter)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config,
                                                        timestep_spacing="trailing",
                                                        beta_schedule="linear")
    # steps = the checkpoint's, guidance 1.0 (no classifier-free guidance: one pass per step)

The adapter skeleton is built under `init_empty_weights()` and filled with `assign=True`: building
the real MotionAdapter() allocates 453M fp32 parameters (2.6 s) only to overwrite them (0.05 s
this way). The scheduler is the arm's (`arm.resolved_scheduler`, Euler as above by default).
"""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers.models.unets.unet_motion_model import MotionAdapter  # see base.py's imports
from diffusers.pipelines.animatediff.pipeline_animatediff import AnimateDiffPipeline
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file

from app.studies.schemas import LIGHTNING_STEPS, ArmSpec
from workers.pipelines.base import (
    MissingWeightsError,
    ModelSources,
    is_local,
    missing_message,
    offline,
    pretrained_kwargs,
    weights_errors,
)

KIND = "animatediff-lightning"


def check_inputs(arm: ArmSpec) -> None:
    if arm.kind != KIND:
        raise ValueError(f"arm {arm.name!r} has kind {arm.kind!r}, not {KIND!r}")
    if arm.steps not in LIGHTNING_STEPS:
        raise ValueError(f"Lightning has checkpoints for steps {LIGHTNING_STEPS}, not {arm.steps}")


def load(sources: ModelSources, *, dtype: torch.dtype) -> AnimateDiffPipeline:
    """Load the weights (on the CPU; the caller moves them). The scheduler is the base model's."""
    # 1. An empty adapter skeleton. Real checkpoints fit MotionAdapter()'s defaults; the tiny
    #    stand-in (the one difference) names a folder holding its own config.
    with init_empty_weights():
        if sources.adapter_config is None:
            adapter = MotionAdapter()
        else:
            adapter = MotionAdapter.from_config(MotionAdapter.load_config(sources.adapter_config))
    # 2. The distilled motion module, assigned into the skeleton (strict: every key must fit).
    state_dict = load_file(str(checkpoint_path(sources)))
    adapter.load_state_dict({k: v.to(dtype) for k, v in state_dict.items()}, assign=True)
    # 3. The SD1.5 base; the pipeline turns its UNet into a UNetMotionModel with the adapter.
    with weights_errors(sources.base_model):
        kwargs = pretrained_kwargs(sources.base_model)
        return AnimateDiffPipeline.from_pretrained(**kwargs, motion_adapter=adapter, dtype=dtype)


def checkpoint_path(sources: ModelSources) -> Path:
    """The checkpoint file: read from a local folder, or fetched (and cached) from the hub."""
    repo, filename = sources.motion_adapter, sources.checkpoint
    if filename is None:
        raise ValueError("a Lightning arm needs a checkpoint file name")
    if is_local(repo):
        path = Path(repo).expanduser() / filename
        if not path.is_file():
            reason = "no such local file"
            raise MissingWeightsError(missing_message(repo, reason=reason, filename=filename))
        return path
    with weights_errors(repo, filename=filename):
        return Path(
            hf_hub_download(repo, filename, revision=sources.revision, local_files_only=offline())
        )
