"""Tiny random-weight models for `--tiny` demos and tests.

They are saved once, in diffusers format, into a cache folder and then loaded through the very same
`from_pretrained` / `load_state_dict` code as real weights: `--tiny` only swaps the arm's model ids
for these local folders. The only "mock" is that the weights are random.

Layout of `<root>/v<TINY_VERSION>/`:
    base/             an SD1.5-shaped StableDiffusionPipeline folder (unet, vae, text_encoder,
                      tokenizer, scheduler) standing in for `arm.base_model`
    motion-adapter/   a MotionAdapter folder standing in for `arm.motion_adapter` (AnimateDiff)
    lightning/        `animatediff_lightning_{1,2,4,8}step_diffusers.safetensors` state dicts
                      and the tiny MotionAdapter's config.json, standing in for the Lightning repo

Tiny clips keep the arm's frame count, fps, scheduler, steps and guidance, but render at 1/8 of
the arm's width and height (512x512 -> 64x64): the tiny VAE, like SD1.5's, scales by 8, so the
tiny UNet sees latents of 8x8 and a 16-frame clip takes seconds on a CPU.

Arms differ only where the real pipelines do. Every arm shares the one base (UNet, VAE, text
encoder); the Lightning checkpoints are "distilled" from the tiny AnimateDiff adapter (its weights
plus a little seeded noise), as the real ones were from AnimateDiff's; schedulers, steps and
guidance are the arm's. Random weights need one more step for that to hold: an untrained UNet's
text conditioning is pure noise, and classifier-free guidance multiplies it (x6.5 at guidance 7.5)
into a colour cast that told the CFG arm from the other at a glance (AnimateDiff magenta). The
tiny UNet's cross-attention outputs are therefore scaled down (CROSS_ATTENTION_GAIN): prompts still
change the clips a little, and the arms' mean colours agree within a few levels.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

# diffusers from the defining modules: see workers/pipelines/base.py's imports
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.models.unets.unet_motion_model import MotionAdapter
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.schedulers.scheduling_pndm import PNDMScheduler
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

T = TypeVar("T")

# Bump when the recipe below changes: caches of an older version are simply not used.
TINY_VERSION = 2
TINY_SCALE = 8
LIGHTNING_STEPS = (1, 2, 4, 8)
BLOCKS = (32, 64)
CROSS_ATTENTION_DIM = 32
# See the module docstring: 1.0 leaves guidance-scaled noise that tints the CFG arm's clips.
CROSS_ATTENTION_GAIN = 0.1
# How far each tiny Lightning checkpoint strays from the AnimateDiff adapter it is distilled from,
# relative to each tensor's spread.
DISTILLATION_NOISE = 0.05
MOTION_ADAPTER_CONFIG = {
    "block_out_channels": BLOCKS,
    "motion_layers_per_block": 1,
    "motion_norm_num_groups": 2,
    "motion_num_attention_heads": 4,
}
# A few merges so the tokenizer exercises BPE, not just single bytes.
MERGES = ("t h", "th e</w>", "a n", "an d</w>", "o n</w>", "i n", "in g</w>", "e r</w>")


@dataclass(frozen=True)
class TinyModels:
    """Where the tiny stand-ins of one cache live."""

    root: Path

    @property
    def base_model(self) -> Path:
        return self.root / "base"

    @property
    def motion_adapter(self) -> Path:
        return self.root / "motion-adapter"

    @property
    def lightning(self) -> Path:
        return self.root / "lightning"


def default_root() -> Path:
    return Path(os.environ.get("VIDARENA_VAR_DIR", "var")) / "tiny-models"


def tiny_size(*, width: int, height: int) -> tuple[int, int]:
    """The tiny render size for an arm's size: 1/8 of it, a multiple of 8, at least 16."""
    return (max(16, width // TINY_SCALE // 8 * 8), max(16, height // TINY_SCALE // 8 * 8))


def ensure_tiny_models(root: Path | None = None) -> TinyModels:
    """Build the tiny models under `root` (default `var/tiny-models/`) unless already there.

    Safe when several processes build at once: each builds into its own temporary folder and
    renames it into place; a loser of the race discards its copy and uses the winner's.
    """
    parent = Path(root) if root is not None else default_root()
    models = TinyModels(parent / f"v{TINY_VERSION}")
    if models.root.is_dir():
        return models
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=parent))
    try:
        _build(TinyModels(staging))
        try:
            staging.rename(models.root)
        except OSError:
            if not models.root.is_dir():  # a real failure, not a lost race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return models


def _build(models: TinyModels) -> None:
    base = StableDiffusionPipeline(
        vae=_seeded(1, _vae),
        text_encoder=_seeded(2, _text_encoder),
        tokenizer=build_tokenizer(),
        unet=_seeded(3, _unet),
        scheduler=_sd15_scheduler(),  # type: ignore[arg-type]  # diffusers annotates an enum
        # None is what requires_safety_checker=False is for; diffusers' annotations omit it.
        safety_checker=None,  # type: ignore[arg-type]  # see the line above
        feature_extractor=None,  # type: ignore[arg-type]  # see the line above
        requires_safety_checker=False,
    )
    base.save_pretrained(models.base_model)
    adapter = _seeded(4, _motion_adapter)
    adapter.save_pretrained(models.motion_adapter)
    models.lightning.mkdir()
    for steps in LIGHTNING_STEPS:
        name = f"animatediff_lightning_{steps}step_diffusers.safetensors"
        save_file(_distilled(adapter, seed=100 + steps), str(models.lightning / name))
    # The real Lightning repo has no config: its loader uses MotionAdapter()'s defaults.
    adapter.save_config(models.lightning)


def _distilled(adapter: MotionAdapter, *, seed: int) -> dict[str, torch.Tensor]:
    """The adapter's weights, each tensor nudged by seeded noise of DISTILLATION_NOISE x its
    spread: a checkpoint of its own that stays close to its teacher."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, tensor in adapter.state_dict().items():
        spread = tensor.float().std() if tensor.numel() > 1 else tensor.new_zeros(())
        noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
        state[key] = (tensor + DISTILLATION_NOISE * spread * noise).contiguous()
    return state


def _seeded(seed: int, build: Callable[[], T]) -> T:
    # Each component gets its own seed so that the cache is byte-for-byte reproducible.
    torch.manual_seed(seed)
    return build()


def _unet() -> UNet2DConditionModel:
    # Annotated: diffusers' @register_to_config leaves its models' constructors typed Any.
    unet: UNet2DConditionModel = UNet2DConditionModel(
        block_out_channels=BLOCKS,
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=8,
        norm_num_groups=2,
    )
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if ".attn2.to_out." in name:  # the text (cross-attention) branch's output
                parameter.mul_(CROSS_ATTENTION_GAIN)
    return unet


def _motion_adapter() -> MotionAdapter:
    adapter: MotionAdapter = MotionAdapter(**MOTION_ADAPTER_CONFIG)  # see _unet
    return adapter


def _vae() -> AutoencoderKL:
    # Four blocks like SD1.5's VAE, so latents are 1/8 of the image, but 16-32 channels wide.
    vae: AutoencoderKL = AutoencoderKL(  # see _unet
        block_out_channels=(16, 32, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=2,
        sample_size=64,
    )
    return vae


def _text_encoder() -> CLIPTextModel:
    vocab = _vocab()
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=CROSS_ATTENTION_DIM,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        max_position_embeddings=77,
        layer_norm_eps=1e-05,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    return CLIPTextModel(config)


def _vocab() -> dict[str, int]:
    """CLIP's byte-level vocabulary cut down to single bytes, their word-final forms and MERGES."""
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP's reversible byte -> printable-character map.
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    chars = list(keep)
    extra = 0
    for byte in range(256):
        if byte not in keep:
            keep.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(keep, chars, strict=True)}


def build_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer over a cut-down byte-level vocabulary (522 tokens, max length 77)."""
    merges = [tuple(merge.split()) for merge in MERGES]
    return CLIPTokenizer(
        vocab=_vocab(),
        # transformers annotates list[str]; the BPE model it hands them to takes (a, b) pairs.
        merges=merges,  # type: ignore[arg-type]  # see the line above
        model_max_length=77,
    )


def _sd15_scheduler() -> PNDMScheduler:
    # What an SD1.5 repository ships; arms override beta_schedule, spacing etc. on top of it.
    scheduler: PNDMScheduler = PNDMScheduler(  # see _unet
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )
    return scheduler
