"""What every pipeline shares: weight sources and their errors, schedulers, and the `Renderer`.

A `Renderer` wraps one arm's loaded `AnimateDiffPipeline`. It renders in two timed phases:
denoising to latents (`output_type="latent"`, text encoding included) and decoding them with the
pipeline's own VAE decode and video processor, so telemetry can split the two.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch

# From the defining modules, not `from diffusers import ...`: a type checker reads diffusers'
# top-level names as its torch-less placeholder classes (utils/dummy_*_objects).
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
DECODE_CHUNK_FRAMES = 16
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
    ) -> None:
        self.arm, self.pipe, self.sources, self.device = arm, pipe, sources, device
        # The base model's own scheduler config, kept so arms sharing weights can build theirs.
        self.base_scheduler_config = base_scheduler_config or pipe.scheduler.config
        self.width, self.height = width, height
        self.dtype = pipe.unet.dtype
        self.load_s = load_s
        self._load_s_unreported = load_s

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
        device, device_name, dtype, peak_memory_bytes, peak_memory_kind
        ("cuda_max_memory_allocated" for this clip, or "process_peak_rss" since the process
        started), torch_version, diffusers_version, models {base_model, motion_adapter,
        checkpoint, revision} (what was really loaded: local folders in tiny mode), tiny.
        """
        # 1. Check inputs.
        self.check_inputs(prompt=prompt, seed=seed)
        _reset_peak_memory(self.device)
        # 2. Starting noise: drawn on the CPU so every arm and every device gets the same.
        noise, generator = self._noise(seed)
        with _cpu_threads(1 if self.sources.tiny and self.device.type == "cpu" else None):
            # 3. Denoise to latents, counting what the UNet really evaluates.
            started = time.perf_counter()
            with _count_denoiser_passes(self.pipe.unet) as passes:
                latents = self._denoise(
                    prompt, noise.to(self.device, self.dtype), generator, on_step
                )
            _synchronize(self.device)
            denoise_s = time.perf_counter() - started
            # 4. Decode with the pipeline's own VAE decode and video processor.
            started = time.perf_counter()
            frames = self._decode(latents)
            decode_s = time.perf_counter() - started
        # 5. Telemetry.
        telemetry = self._telemetry(denoise_s=denoise_s, decode_s=decode_s, passes=passes[0])
        return Rendered(frames=frames, telemetry=telemetry)

    def _denoise(
        self,
        prompt: str,
        latents: torch.Tensor,
        generator: torch.Generator,
        on_step: StepCallback | None,
    ) -> torch.Tensor:
        arm = self.arm
        output = self.pipe(
            prompt=prompt,
            negative_prompt=arm.negative_prompt if arm.guidance_scale > 1.0 else None,
            num_frames=arm.num_frames,
            height=self.height,
            width=self.width,
            num_inference_steps=arm.steps,
            guidance_scale=arm.guidance_scale,
            latents=latents,
            generator=generator,
            output_type="latent",
            callback_on_step_end=_step_callback(on_step, total=arm.steps) if on_step else None,
        )
        latents_out: torch.Tensor = output.frames  # the pipeline's __call__ is typed Any
        return latents_out

    @torch.inference_mode()
    def _decode(self, latents: torch.Tensor) -> list[Image.Image]:
        video = self.pipe.decode_latents(latents, decode_chunk_size=DECODE_CHUNK_FRAMES)
        _synchronize(self.device)
        frames = self.pipe.video_processor.postprocess_video(video=video, output_type="pil")[0]
        return [frame.convert("RGB") for frame in frames]

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
