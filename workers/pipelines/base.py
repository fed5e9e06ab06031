"""What every pipeline shares: weight sources and their errors, schedulers, and the `Renderer`.

A `Renderer` wraps one arm's loaded `AnimateDiffPipeline`. It renders in two timed phases:
denoising to latents (`output_type="latent"`, text encoding included) and decoding them with the
pipeline's own VAE decode, so telemetry can split the two.

What keeps the GPU near its compute floor (`prepare_pipeline` does the model side: scaled-dot-
product attention, fp16 weights, channels-last, no VAE slicing, optional torch.compile):
- text embeddings are computed once per prompt and arm (`Renderer` keeps an LRU of them: the
  arm's negative prompt is encoded once, not once per clip);
- `render_batch` denoises several prompts of one arm in one call (the UNet's batch is
  prompts x 2 with classifier-free guidance). Each prompt keeps its own starting noise, drawn
  from its own seed's CPU generator exactly as `render` draws it, and its own generator for the
  scheduler, so a clip is the same batched or not (up to float rounding: see
  tests/test_pipelines.py);
- the VAE decodes a clip's frames in one call (no per-frame slicing), and frames become uint8
  on the device before the one copy to the host (a quarter of float32's bytes).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import platform
import resource
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch

# From the defining modules, not `from diffusers import ...`: a type checker reads diffusers'
# top-level names as its torch-less placeholder classes (utils/dummy_*_objects).
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.pipelines.animatediff.pipeline_animatediff import AnimateDiffPipeline
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from huggingface_hub import constants as hub_constants
from huggingface_hub import errors as hub_errors
from PIL import Image

from app.studies.schemas import ArmSpec, SchedulerSpec

SCHEDULERS = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed's range
# Frames per VAE decode call: one 16-frame clip at a time (SD1.5's VAE at 512x512 in fp16 peaks
# at a few GiB for that), never one frame at a time.
DECODE_CHUNK_FRAMES = 16
# Text embeddings kept per renderer (prompt, negative prompt): a study has hundreds of prompts.
EMBEDDING_CACHE = 256
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
StepCallback = Callable[[int, int], None]


class MissingWeightsError(RuntimeError):
    """An arm's weights are not available here: offline and not cached, 401/403/404 from the hub,
    or a local folder or file that does not exist. Permanent: retrying will not fix it."""


@dataclass
class Rendered:
    frames: list[Image.Image]  # RGB, one per frame, all the render size
    telemetry: dict[str, Any]  # JSON-serialisable; see Renderer.render


@dataclass(frozen=True)
class ModelSources:
    """Where one arm's weights come from, after `--tiny` has swapped ids for local folders."""

    base_model: str
    motion_adapter: str
    checkpoint: str | None = None  # Lightning: the state-dict file inside `motion_adapter`
    revision: str | None = None  # pins `motion_adapter` (the arm's one revision field)
    adapter_config: str | None = None  # Lightning: folder with the adapter config; None = default
    tiny: bool = False


# --- where weights come from ----------------------------------------------------------------


def is_local(ref: str) -> bool:
    """Whether a study file's model reference is a path rather than a hub id ("owner/name")."""
    return Path(ref).expanduser().exists() or ref.startswith(("/", ".", "~")) or ref.count("/") > 1


def offline() -> bool:
    # Read at call time too: huggingface_hub reads HF_HUB_OFFLINE only once, at import.
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return hub_constants.HF_HUB_OFFLINE or flag.strip().lower() in {"1", "true", "yes", "on"}


def pretrained_kwargs(ref: str, *, revision: str | None = None) -> dict[str, Any]:
    """`from_pretrained` arguments for a hub id or a local folder (which must exist)."""
    if is_local(ref):
        path = Path(ref).expanduser()
        if not path.is_dir():
            raise MissingWeightsError(missing_message(ref, reason="no such local folder"))
        return {"pretrained_model_name_or_path": str(path)}
    return {
        "pretrained_model_name_or_path": ref,
        "revision": revision,
        "local_files_only": offline(),
    }


def missing_message(ref: str, *, reason: str, filename: str | None = None) -> str:
    what = f"{ref!r}" + (f" (file {filename!r})" if filename else "")
    if is_local(ref):
        how = "put the weights there or fix the path in the study file"
    else:
        target = f"{ref} {filename}" if filename else ref
        how = (
            f"download them on this machine with `hf download {target}` (older huggingface_hub: "
            f"`huggingface-cli download {target}`), set HF_TOKEN if the repository is gated or "
            "private, or put a local folder path in the study file instead of the model id"
        )
    return f"weights for {what} are not available: {reason}. To fix: {how}"


@contextlib.contextmanager
def weights_errors(ref: str, *, filename: str | None = None) -> Iterator[None]:
    """Turn "cannot get these weights" errors into MissingWeightsError naming `ref`.

    diffusers re-raises hub errors as plain OSError, so an unreachable hub without a local copy
    counts as missing too. Rate limits and server errors, when still visible, stay transient.
    """
    try:
        yield
    except MissingWeightsError:
        raise
    except (OSError, hub_errors.EntryNotFoundError, hub_errors.HFValidationError) as exc:
        if _is_transient(exc):
            raise
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        reason = f"{type(exc).__name__}: {first_line.rstrip('.')}"
        raise MissingWeightsError(missing_message(ref, reason=reason, filename=filename)) from exc


def _is_transient(exc: BaseException | None) -> bool:
    while exc is not None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(exc, hub_errors.HfHubHTTPError) and status in RETRYABLE_STATUS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# --- device, dtype, scheduler ---------------------------------------------------------------


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def choose_dtype(device: torch.device) -> torch.dtype:
    # fp16 as both model cards use it; CPUs have no fast half-precision kernels.
    return torch.float32 if device.type == "cpu" else torch.float16


def build_scheduler(spec: SchedulerSpec, base_config: Any) -> SchedulerMixin:
    """The arm's scheduler: the base model's scheduler config with the arm's overrides on top."""
    cls = SCHEDULERS[spec.name]
    accepted = inspect.signature(cls.__init__).parameters
    overrides = {k: v for k, v in spec.model_dump(exclude={"name"}).items() if k in accepted}
    scheduler: SchedulerMixin = cls.from_config(base_config, **overrides)  # typed Any in diffusers
    return scheduler


def scheduler_summary(scheduler: Any) -> dict[str, Any]:
    keys = ("beta_schedule", "timestep_spacing", "clip_sample", "steps_offset", "prediction_type")
    summary = {key: scheduler.config[key] for key in keys if key in scheduler.config}
    return {"name": type(scheduler).__name__, **summary}


def prepare_pipeline(
    pipe: AnimateDiffPipeline, *, device: torch.device, compile_models: bool
) -> bool:
    """Ready loaded weights for fast rendering on `device`; returns whether they were compiled.

    Every device: PyTorch's scaled-dot-product attention everywhere (diffusers' default
    processor, set explicitly so that a checkpoint's config cannot leave the slow path on), and
    no VAE slicing (decoding frame by frame only saves memory an H100 has). CUDA: the weights in
    the pipeline's half precision (done by the loader), channels-last convolutions, cuDNN picking
    its fastest kernels for the fixed shapes, and with `compile_models` the UNet and the VAE
    decoder compiled in place (torch.compile; the caller pays the warm-up once per process).
    """
    sdpa = AttnProcessor2_0()  # type: ignore[no-untyped-call]  # untyped upstream
    pipe.unet.set_attn_processor(sdpa)
    pipe.vae.set_attn_processor(sdpa)
    pipe.vae.disable_slicing()
    pipe.vae.disable_tiling()
    if device.type != "cuda":
        return False
    torch.backends.cudnn.benchmark = True
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    if compile_models:
        pipe.unet.compile(fullgraph=False, dynamic=False)
        pipe.vae.decoder.compile(fullgraph=False, dynamic=False)
    return compile_models


# --- the renderer ---------------------------------------------------------------------------


class Renderer:
    """One arm's pipeline, loaded once per process. Get it from `get_renderer`.

    `load_s` is the time this process spent loading the renderer's weights (0.0 when another
    cached renderer already had them). Telemetry reports it on this renderer's first clip only and
    0.0 afterwards, so summing `load_s` over clips gives the process's total load time.
    """

    def __init__(
        self,
        *,
        arm: ArmSpec,
        pipe: AnimateDiffPipeline,
        sources: ModelSources,
        device: torch.device,
        width: int,
        height: int,
        load_s: float,
        base_scheduler_config: Any = None,
        compiled: bool = False,
    ) -> None:
        self.arm, self.pipe, self.sources, self.device = arm, pipe, sources, device
        # The base model's own scheduler config, kept so arms sharing weights can build theirs.
        self.base_scheduler_config = base_scheduler_config or pipe.scheduler.config
        self.width, self.height = width, height
        self.dtype = pipe.unet.dtype
        self.load_s = load_s
        self.compiled = compiled
        self._load_s_unreported = load_s
        self._embeddings: OrderedDict[str, torch.Tensor] = OrderedDict()

    def reset_load_report(self) -> None:
        """Report `load_s` (as it is now) on the next clip, as for a fresh renderer."""
        self._load_s_unreported = self.load_s

    def check_inputs(self, *, prompt: object, seed: object) -> None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in 0..{MAX_SEED}, got {seed!r}")
        max_frames = self.pipe.unet.config.motion_max_seq_length
        if self.arm.num_frames > max_frames:
            raise ValueError(
                f"num_frames {self.arm.num_frames} exceeds the motion module's "
                f"motion_max_seq_length {max_frames}"
            )

    def latent_shape(self) -> tuple[int, ...]:
        scale = self.pipe.vae_scale_factor
        channels = self.pipe.unet.config.in_channels
        return (1, channels, self.arm.num_frames, self.height // scale, self.width // scale)

    @property
    def guided(self) -> bool:
        """Classifier-free guidance: the UNet evaluates a negative-prompt copy of each video."""
        return self.arm.guidance_scale > 1.0

    def text_embeddings(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prompt's text embeddings and, with guidance, the arm's negative prompt's, each
        computed once per renderer (arm): the negative prompt once for all the arm's clips."""
        negative = self._embed(self.arm.negative_prompt or "") if self.guided else None
        return self._embed(prompt), negative

    @torch.inference_mode()
    def _embed(self, text: str) -> torch.Tensor:
        # encode_prompt without guidance: the same tokens and encoder call it makes for a
        # negative prompt (padded to 77 tokens, truncated), so either text is embedded alike.
        if text in self._embeddings:
            self._embeddings.move_to_end(text)
            return self._embeddings[text]
        embeds: torch.Tensor = self.pipe.encode_prompt(text, self.device, 1, False)[0]
        self._embeddings[text] = embeds
        while len(self._embeddings) > EMBEDDING_CACHE:
            self._embeddings.popitem(last=False)
        return embeds

    def initial_noise(self, *, seed: int) -> torch.Tensor:
        """The clip's starting noise: fp32 from a CPU generator, alike for every arm and device."""
        return self._noise(seed)[0]

    def _noise(self, seed: int) -> tuple[torch.Tensor, torch.Generator]:
        generator = torch.Generator("cpu").manual_seed(seed)
        noise = randn_tensor(self.latent_shape(), generator=generator, dtype=torch.float32)
        return noise, generator  # the generator goes on to the scheduler's steps

    def render(self, *, prompt: str, seed: int, on_step: StepCallback | None = None) -> Rendered:
        """Render one clip. `on_step(step, total)` is called after each denoising step, 1-based.

        Telemetry: load_s (see the class), denoise_s (text encoding + denoising), decode_s (VAE +
        frames to PIL), denoiser_passes (UNet evaluations per video, observed: steps x 2 with
        CFG), steps, guidance_scale, num_frames, width, height, scheduler {name, config keys},
        device, device_name, dtype, attention (the attention processors in use), memory_format,
        compiled, batch_size (clips denoised together; their times are the batch's),
        peak_memory_bytes, peak_memory_kind ("cuda_max_memory_allocated" for this clip, or
        "process_peak_rss" since the process started), torch_version, diffusers_version, models
        {base_model, motion_adapter, checkpoint, revision} (what was really loaded: local folders
        in tiny mode), tiny.
        """
        return self.render_batch(prompts=[prompt], seeds=[seed], on_step=on_step)[0]

    def render_batch(
        self, *, prompts: list[str], seeds: list[int], on_step: StepCallback | None = None
    ) -> list[Rendered]:
        """Render one clip per (prompt, seed) in one denoising call and one decode.

        Each clip starts from its own seed's noise and gets its own generator, as with `render`,
        so it comes out the same batched or alone (up to float rounding). Telemetry as for
        `render`; the times are the whole batch's.
        """
        # 1. Check inputs.
        if not prompts or len(prompts) != len(seeds):
            raise ValueError(f"need one seed per prompt, got {len(prompts)} and {len(seeds)}")
        for prompt, seed in zip(prompts, seeds, strict=True):
            self.check_inputs(prompt=prompt, seed=seed)
        _reset_peak_memory(self.device)
        # 2. Starting noise: drawn on the CPU so every arm and every device gets the same.
        drawn = [self._noise(seed) for seed in seeds]
        noise = torch.cat([latents for latents, _ in drawn])
        generators = [generator for _, generator in drawn]
        with _cpu_threads(1 if self.sources.tiny and self.device.type == "cpu" else None):
            # 3. Denoise to latents, counting what the UNet really evaluates.
            started = time.perf_counter()
            with _count_denoiser_passes(self.pipe.unet) as passes:
                latents = self._denoise(
                    prompts, noise.to(self.device, self.dtype), generators, on_step
                )
            _synchronize(self.device)
            denoise_s = time.perf_counter() - started
            # 4. Decode with the pipeline's own VAE decode.
            started = time.perf_counter()
            videos = self._decode(latents)
            decode_s = time.perf_counter() - started
        # 5. Telemetry.
        telemetry = self._telemetry(
            denoise_s=denoise_s, decode_s=decode_s, passes=passes[0] // len(prompts)
        )
        telemetry["batch_size"] = len(prompts)
        return [Rendered(frames=frames, telemetry=dict(telemetry)) for frames in videos]

    def _denoise(
        self,
        prompts: list[str],
        latents: torch.Tensor,
        generators: list[torch.Generator],
        on_step: StepCallback | None,
    ) -> torch.Tensor:
        arm = self.arm
        embedded = [self.text_embeddings(prompt) for prompt in prompts]
        positive = torch.cat([pos for pos, _ in embedded])
        negative = (
            torch.cat([neg for _, neg in embedded if neg is not None]) if self.guided else None
        )
        output = self.pipe(
            prompt_embeds=positive,
            negative_prompt_embeds=negative,
            num_frames=arm.num_frames,
            height=self.height,
            width=self.width,
            num_inference_steps=arm.steps,
            guidance_scale=arm.guidance_scale,
            latents=latents,
            generator=generators,
            output_type="latent",
            callback_on_step_end=_step_callback(on_step, total=arm.steps) if on_step else None,
        )
        latents_out: torch.Tensor = output.frames  # the pipeline's __call__ is typed Any
        return latents_out

    @torch.inference_mode()
    def _decode(self, latents: torch.Tensor) -> list[list[Image.Image]]:
        """Frames of each video, as diffusers' video processor makes them (denormalise, clamp,
        x255, round), but turned to uint8 on the device before the copy to the host."""
        video = self.pipe.decode_latents(latents, decode_chunk_size=DECODE_CHUNK_FRAMES)
        pixels = ((video / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
        # (batch, channels, frames, height, width) -> (batch, frames, height, width, channels)
        host = pixels.permute(0, 2, 3, 4, 1).contiguous().cpu().numpy()
        return [[Image.fromarray(frame) for frame in clip] for clip in host]

    def _telemetry(self, *, denoise_s: float, decode_s: float, passes: int) -> dict[str, Any]:
        load_s, self._load_s_unreported = self._load_s_unreported, 0.0
        peak, peak_kind = _peak_memory(self.device)
        sources = self.sources
        return {
            "load_s": round(load_s, 4),
            "denoise_s": round(denoise_s, 4),
            "decode_s": round(decode_s, 4),
            "denoiser_passes": passes,
            "steps": self.arm.steps,
            "guidance_scale": self.arm.guidance_scale,
            "num_frames": self.arm.num_frames,
            "width": self.width,
            "height": self.height,
            "scheduler": scheduler_summary(self.pipe.scheduler),
            "device": str(self.device),
            "device_name": _device_name(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "attention": attention_processors(self.pipe),
            "memory_format": "channels_last" if _channels_last(self.pipe.unet) else "contiguous",
            "compiled": self.compiled,
            "peak_memory_bytes": peak,
            "peak_memory_kind": peak_kind,
            "torch_version": torch.__version__,
            "diffusers_version": diffusers.__version__,
            "models": {
                "base_model": sources.base_model,
                "motion_adapter": sources.motion_adapter,
                "checkpoint": sources.checkpoint,
                "revision": sources.revision,
            },
            "tiny": sources.tiny,
        }


def attention_processors(pipe: AnimateDiffPipeline) -> list[str]:
    """The attention processor classes the UNet and VAE use (AttnProcessor2_0: PyTorch's
    scaled_dot_product_attention, which picks flash or memory-efficient kernels)."""
    names = set()
    for model in (pipe.unet, pipe.vae):
        names |= {type(p).__name__ for p in model.attn_processors.values()}
    return sorted(names)


def _channels_last(model: torch.nn.Module) -> bool:
    convs = (
        m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)
    )
    weight = next((m.weight for m in convs), None)
    return weight is not None and weight.is_contiguous(memory_format=torch.channels_last)


def _step_callback(on_step: StepCallback, *, total: int) -> Callable[..., dict[str, Any]]:
    def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        on_step(step + 1, total)
        return {}  # the pipeline pops replacement tensors from what we return

    return callback


@contextlib.contextmanager
def _cpu_threads(count: int | None) -> Iterator[None]:
    """Run on `count` CPU threads (None: leave torch's setting alone).

    Tiny models render on one: their kernels are too small to share out, and on a busy 2-core
    machine (the demo's own web server beside the worker) torch's spinning OpenMP threads made a
    tiny AnimateDiff clip take ~60 s instead of ~5 s.
    """
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _count_denoiser_passes(unet: torch.nn.Module) -> Iterator[list[int]]:
    """Count UNet evaluations per video: a CFG call carries 2 videos in its batch."""
    count = [0]

    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sample = args[0] if args else kwargs["sample"]
        count[0] += int(sample.shape[0])

    handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield count
    finally:
        handle.remove()


def _synchronize(device: torch.device) -> None:
    # CUDA runs asynchronously: without this, phase timings would leak into each other.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_memory_allocated"
    # The CPU has no per-clip counter: this is the whole process's peak resident set.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024, "process_peak_rss"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()
