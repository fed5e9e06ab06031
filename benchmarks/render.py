"""Seconds per clip per arm: load, denoise, decode, encode, the UNet passes really made, and the
clip's wall time in the worker's overlapped pipeline against its GPU time and compute floor.

The arms are those of examples/lightning-vs-animatediff/study.toml (AnimateDiff: 25 DDIM steps,
guidance 7.5; Lightning: 4 Euler steps, guidance 1.0; 16 frames at 512x512, 8 fps).

    # CPU, tiny random-weight models (renders at 1/8 size: 64x64)
    .venv/bin/python benchmarks/render.py [--clips 3]

    # GPU: full-size SD1.5 UNet/VAE/CLIP text encoder and MotionAdapter() with random weights
    # (no downloads, same compute as the real models), printed beside the compute floor
    python benchmarks/render.py --full-size [--clips 4] [--batch 2] [--compile] [--peak-tflops 790]

`--full-size` needs CUDA: on the CPU this benchmark runs the tiny models only. Every arm renders
--clips clips one after another, each handed to the worker's real `EncoderPool`
(workers/render.py: encoder processes running the encode and a store into a temporary folder,
no database) while the next renders, as a render worker does; "clip wall s" is that run's
seconds per clip, which the pipeline brings down to the GPU time when the encoders keep up.

The compute floor: the FLOPs of one UNet pass and of the VAE decode, counted by
torch.utils.flop_counter on the full-size models built on the meta device (no memory, no
compute) for the clip's frames and size, times the passes the UNet really made, divided by an
assumed peak of 790 TFLOP/s (--peak-tflops): the dense bf16/fp16 rate measured on an H100 SXM
(its data sheet says 989). For 16 x 512 x 512: 17.75 TFLOP per UNet pass and 40.23 for the
decode, so AnimateDiff (25 steps with CFG: 50 passes) ~928 TFLOP, ~1.17 s; Lightning (4 steps)
~111 TFLOP, ~0.14 s. The text encoder (< 0.1 TFLOP) is left out.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from diffusers import (
    AnimateDiffPipeline,
    AutoencoderKL,
    MotionAdapter,
    UNet2DConditionModel,
    UNetMotionModel,
)
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel

from app.config import Settings
from app.studies.schemas import ArmSpec
from benchmarks.pipeline import NoLease, encode_and_store
from workers.pipelines import get_renderer
from workers.pipelines.base import (
    ModelSources,
    Rendered,
    Renderer,
    build_scheduler,
    choose_dtype,
    prepare_pipeline,
    resolve_device,
)
from workers.pipelines.tiny import build_tokenizer, ensure_tiny_models
from workers.render import EncoderPool, Outcome, PostRender

STUDY = Path(__file__).resolve().parent.parent / "examples/lightning-vs-animatediff/study.toml"
PROMPT = "a lighthouse on a cliff at dusk, waves crashing"
SD15_SCHEDULER = {  # an SD1.5 repository's scheduler config; arms override it
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
}


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device)
    if args.full_size and device.type != "cuda":
        sys.exit("--full-size needs a CUDA GPU; on the CPU run the tiny models (no --full-size)")
    arms = [_override(arm, args) for arm in example_arms()]
    print(f"`{' '.join(['python', *sys.argv])}`")
    print(f"{_device_name(device)}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    mode = "full-size random weights" if args.full_size else "tiny random weights"
    print(f"{mode}; mean of {args.clips} clip(s) after {args.warmup} warm-up clip(s)\n")
    rows = [bench_arm(arm, args=args, device=device) for arm in arms]
    print_table(rows, full_size=args.full_size)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full-size", action="store_true", help="full-size random-weight models")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--clips", type=int, default=4, help="timed clips per arm")
    parser.add_argument("--batch", type=int, default=1, help="prompts per denoising call")
    parser.add_argument("--compile", action="store_true", help="torch.compile (CUDA)")
    parser.add_argument("--encoders", type=int, default=None, help="default: cores less one")
    parser.add_argument("--warmup", type=int, default=None, help="default: 1 on cuda, else 0")
    parser.add_argument("--frames", type=int, default=None, help="override num_frames")
    parser.add_argument("--size", type=int, default=None, help="override width and height")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="card's dense fp16 rate")
    parser.add_argument("--tiny-root", type=Path, default=None, help="tiny-model cache folder")
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = 1 if resolve_device(args.device).type == "cuda" else 0
    return args


def example_arms() -> list[ArmSpec]:
    study = tomllib.loads(STUDY.read_text())
    return [ArmSpec(**{**study.get("render", {}), **arm}) for arm in study["arms"]]


def _override(arm: ArmSpec, args: argparse.Namespace) -> ArmSpec:
    update: dict[str, Any] = {}
    if args.frames:
        update["num_frames"] = args.frames
    if args.size:
        update["width"] = update["height"] = args.size
    return arm.model_copy(update=update)


def bench_arm(arm: ArmSpec, *, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    if args.full_size:
        renderer = full_size_renderer(arm, device=device, compile_models=args.compile)
    else:
        ensure_tiny_models(args.tiny_root)  # built once, outside the load timing
        renderer = get_renderer(arm, tiny=True, device=str(device), tiny_root=args.tiny_root)
    batch = args.batch
    for seed in range(args.warmup):
        _render(renderer, seed=seed, batch=batch)
    clips, wall_s = _overlapped_run(renderer, arm, args=args)
    row = {key: statistics.mean(clip[key] for clip in clips) for key in clips[0]}
    row.update(arm=arm.name, load_s=renderer.load_s, size=f"{renderer.width}x{renderer.height}")
    row["wall_s"] = wall_s
    row["floor_s"] = _floor_s(arm, renderer, passes=row["passes"], peak_tflops=args.peak_tflops)
    return row


def _render(renderer: Renderer, *, seed: int, batch: int) -> list[Rendered]:
    prompts = [f"{PROMPT}, take {i}" for i in range(batch)]
    return renderer.render_batch(prompts=prompts, seeds=[seed + i for i in range(batch)])


def _overlapped_run(
    renderer: Renderer, arm: ArmSpec, *, args: argparse.Namespace
) -> tuple[list[dict[str, float]], float]:
    """Render args.clips clips (args.batch per call), each handed to the worker's EncoderPool
    while the next renders; returns each clip's figures and the run's wall seconds per clip."""
    storage = tempfile.mkdtemp(prefix="render-bench-")
    settings = Settings(_env_file=None, var_dir=Path(storage), storage_url=storage)  # type: ignore[call-arg]
    pool = EncoderPool(args.encoders or settings.resolved_encode_workers, stage=encode_and_store)
    pool.warm_up()
    encoded: list[float] = []
    done = threading.Semaphore(0)

    def finished(clip: int, outcome: Outcome) -> None:
        encoded.append(float(outcome.detail))
        done.release()

    clips: list[dict[str, float]] = []
    calls = max(1, args.clips // args.batch)
    started = time.perf_counter()
    for call in range(calls):
        rendered = _render(renderer, seed=1000 + call * args.batch, batch=args.batch)
        for clip in rendered:
            telemetry = clip.telemetry
            clips.append(
                {
                    # a batch's times, shared out over its clips
                    "denoise_s": telemetry["denoise_s"] / args.batch,
                    "decode_s": telemetry["decode_s"] / args.batch,
                    "passes": telemetry["denoiser_passes"],
                    "peak_gib": telemetry["peak_memory_bytes"] / 2**30,
                }
            )
            work = PostRender(
                settings=settings,
                clip_id=len(clips),
                task_id="bench",
                frames=clip.frames,
                fps=arm.fps,
                telemetry={},
                started_at=time.time(),
            )
            pool.hand_off(work, lease=NoLease(), on_finished=finished)
    for _ in clips:
        done.acquire()
    wall_s = (time.perf_counter() - started) / len(clips)
    pool.shutdown(wait=True)
    for clip, encode_s in zip(clips, encoded, strict=True):
        clip["encode_s"] = encode_s
    return clips, wall_s


def _floor_s(
    arm: ArmSpec, renderer: Renderer, *, passes: float, peak_tflops: float
) -> float | None:
    if renderer.sources.tiny:
        return None  # a floor for random tiny models would say nothing about real ones
    unet_pass, vae_decode = counted_tflop(arm.num_frames, renderer.height, renderer.width)
    return (passes * unet_pass + vae_decode) / peak_tflops


@functools.cache
def counted_tflop(frames: int, height: int, width: int) -> tuple[float, float]:
    """TFLOP of one UNet pass over one video and of its VAE decode, counted on the meta device."""
    with torch.device("meta"):
        unet = UNetMotionModel.from_unet2d(_sd15_unet(), MotionAdapter())
        vae = _sd15_vae()
        latents = torch.randn(1, 4, frames, height // 8, width // 8)
        text = torch.randn(frames, 77, 768)
        with FlopCounterMode(display=False) as unet_count:
            unet(latents, torch.tensor([500]), encoder_hidden_states=text)
        with FlopCounterMode(display=False) as vae_count:
            vae.decode(torch.randn(frames, 4, height // 8, width // 8))
    return unet_count.get_total_flops() / 1e12, vae_count.get_total_flops() / 1e12


def print_table(rows: list[dict[str, Any]], *, full_size: bool) -> None:
    load = "build s" if full_size else "load s"
    print(
        f"| arm | size | passes | {load} | denoise s | decode s | GPU s | encode s (CPU) "
        "| clip wall s | floor s | GPU / floor | wall / GPU | peak GiB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        gpu_s = row["denoise_s"] + row["decode_s"]
        floor = row["floor_s"]
        floor_text = f"{floor:.2f} | {gpu_s / floor:.2f}" if floor else "- | -"
        print(
            f"| {row['arm']} | {row['size']} | {row['passes']:.0f} | {row['load_s']:.2f} "
            f"| {row['denoise_s']:.3f} | {row['decode_s']:.3f} | {gpu_s:.3f} "
            f"| {row['encode_s']:.3f} | {row['wall_s']:.3f} | {floor_text} "
            f"| {row['wall_s'] / gpu_s:.2f} | {row['peak_gib']:.2f} |"
        )
    print(
        "\nGPU s = denoise + decode (a batch's times shared out over its clips); clip wall s = "
        "seconds per clip of the whole run, encodes overlapped in the worker's EncoderPool; "
        "floor s = counted FLOPs / peak (full-size models only)."
    )


# --- full-size random-weight models ----------------------------------------------------------


def full_size_renderer(arm: ArmSpec, *, device: torch.device, compile_models: bool) -> Renderer:
    """SD1.5-sized UNet, VAE and CLIP text encoder plus MotionAdapter(), randomly initialised."""
    started = time.perf_counter()
    torch.manual_seed(0)
    # Built outside the block below: schedulers keep their tables on the CPU (EulerDiscrete's
    # set_timesteps turns alphas_cumprod into a NumPy array, which fails for a CUDA tensor).
    scheduler = build_scheduler(arm.resolved_scheduler, SD15_SCHEDULER)
    with torch.device(device):  # initialise straight on the GPU: seconds, not a minute
        unet = _sd15_unet()
        vae = _sd15_vae()
        text_encoder = CLIPTextModel(_clip_text_config())
        # Turns the UNet into a UNetMotionModel, created on `device` too inside this block.
        pipe = AnimateDiffPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=build_tokenizer(),  # token ids are all the encoder needs: same compute
            unet=unet,
            motion_adapter=MotionAdapter(),
            scheduler=scheduler,
        )
    del unet
    pipe.to(device=device, dtype=choose_dtype(device))
    compiled = prepare_pipeline(pipe, device=device, compile_models=compile_models)  # as workers
    pipe.set_progress_bar_config(disable=True)
    renderer = Renderer(
        arm=arm,
        pipe=pipe,
        sources=ModelSources(base_model="random SD1.5", motion_adapter="random MotionAdapter()"),
        device=device,
        width=arm.width,
        height=arm.height,
        load_s=time.perf_counter() - started,
        compiled=compiled,
    )
    if compiled:  # the compilation, paid here as get_renderer pays it in a worker
        renderer.render(prompt="warm-up", seed=0)
        renderer.load_s = time.perf_counter() - started
    return renderer


def _sd15_unet() -> UNet2DConditionModel:
    unet: UNet2DConditionModel = UNet2DConditionModel(
        sample_size=64,
        cross_attention_dim=768,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        attention_head_dim=8,
    )
    return unet


def _sd15_vae() -> AutoencoderKL:
    vae: AutoencoderKL = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        sample_size=512,
    )
    return vae


def _clip_text_config() -> CLIPTextConfig:
    tokenizer = build_tokenizer()  # its special-token ids, in CLIP ViT-L/14's text tower
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}"


if __name__ == "__main__":
    main()
