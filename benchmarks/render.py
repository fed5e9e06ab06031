"""Seconds per clip per arm: load, denoise, decode, encode, and the UNet passes really made.

The arms are those of examples/lightning-vs-animatediff/study.toml (AnimateDiff: 25 DDIM steps,
guidance 7.5; Lightning: 4 Euler steps, guidance 1.0; 16 frames at 512x512, 8 fps).

    # CPU, tiny random-weight models (renders at 1/8 size: 64x64)
    .venv/bin/python benchmarks/render.py [--clips 3]

    # GPU: full-size SD1.5 UNet/VAE/CLIP text encoder and MotionAdapter() with random weights
    # (no downloads, same compute as the real models), printed beside the compute floor
    .venv/bin/python benchmarks/render.py --full-size [--clips 3] [--peak-tflops 790]

    # CPU smoke test of the full-size path (about 10 GB of RAM)
    .venv/bin/python benchmarks/render.py --full-size --device cpu --frames 2 --size 64 --clips 1

The compute floor counts ~17.75 TFLOP per UNet pass and ~40 TFLOP for the VAE decode of a
16-frame 512x512 clip (AnimateDiff 25 steps with CFG: ~928 TFLOP; Lightning 4 steps: ~111), at
the card's measured dense bf16/fp16 rate (H100: ~790 TFLOP/s -> ~1.2 s and ~0.14 s).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
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
)
from transformers import CLIPTextConfig, CLIPTextModel

from app.clips.gif import encode_gif
from app.studies.schemas import ArmSpec
from workers.pipelines import get_renderer
from workers.pipelines.base import (
    ModelSources,
    Renderer,
    build_scheduler,
    choose_dtype,
    resolve_device,
)
from workers.pipelines.tiny import build_tokenizer, ensure_tiny_models

STUDY = Path(__file__).resolve().parent.parent / "examples/lightning-vs-animatediff/study.toml"
PROMPT = "a lighthouse on a cliff at dusk, waves crashing"
UNET_PASS_TFLOP = 17.75  # one UNet evaluation of a 16-frame 512x512 clip
VAE_DECODE_TFLOP = 40.0  # decoding that clip's 16 frames
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
    parser.add_argument("--clips", type=int, default=3, help="timed clips per arm")
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
        renderer = full_size_renderer(arm, device=device)
    else:
        ensure_tiny_models(args.tiny_root)  # built once, outside the load timing
        renderer = get_renderer(arm, tiny=True, device=str(device), tiny_root=args.tiny_root)
    for seed in range(args.warmup):
        renderer.render(prompt=PROMPT, seed=seed)
    clips = [_timed_clip(renderer, arm, seed=1000 + i) for i in range(args.clips)]
    row = {key: statistics.mean(clip[key] for clip in clips) for key in clips[0]}
    row.update(arm=arm.name, load_s=renderer.load_s, size=f"{renderer.width}x{renderer.height}")
    row["floor_s"] = _floor_s(arm, renderer, passes=row["passes"], peak_tflops=args.peak_tflops)
    return row


def _timed_clip(renderer: Renderer, arm: ArmSpec, *, seed: int) -> dict[str, float]:
    rendered = renderer.render(prompt=PROMPT, seed=seed)
    started = time.perf_counter()
    encode_gif(rendered.frames, fps=arm.fps)
    encode_s = time.perf_counter() - started
    telemetry = rendered.telemetry
    return {
        "denoise_s": telemetry["denoise_s"],
        "decode_s": telemetry["decode_s"],
        "encode_s": encode_s,
        "passes": telemetry["denoiser_passes"],
        "peak_gib": telemetry["peak_memory_bytes"] / 2**30,
    }


def _floor_s(
    arm: ArmSpec, renderer: Renderer, *, passes: float, peak_tflops: float
) -> float | None:
    # The TFLOP figures were counted for 16 frames at 512x512 only.
    if (arm.num_frames, renderer.width, renderer.height) != (16, 512, 512):
        return None
    return (passes * UNET_PASS_TFLOP + VAE_DECODE_TFLOP) / peak_tflops


def print_table(rows: list[dict[str, Any]], *, full_size: bool) -> None:
    load = "build s" if full_size else "load s"
    print(
        f"| arm | size | passes | {load} | denoise s | decode s | encode s | clip s "
        "| floor s | x floor | peak GiB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        gpu_s = row["denoise_s"] + row["decode_s"]
        floor = row["floor_s"]
        floor_text = f"{floor:.2f} | {gpu_s / floor:.1f}" if floor else "- | -"
        print(
            f"| {row['arm']} | {row['size']} | {row['passes']:.0f} | {row['load_s']:.2f} "
            f"| {row['denoise_s']:.3f} | {row['decode_s']:.3f} | {row['encode_s']:.3f} "
            f"| {gpu_s + row['encode_s']:.3f} | {floor_text} | {row['peak_gib']:.2f} |"
        )
    print("\nclip s = denoise + decode + encode; x floor = (denoise + decode) / floor.")


# --- full-size random-weight models ----------------------------------------------------------


def full_size_renderer(arm: ArmSpec, *, device: torch.device) -> Renderer:
    """SD1.5-sized UNet, VAE and CLIP text encoder plus MotionAdapter(), randomly initialised."""
    started = time.perf_counter()
    torch.manual_seed(0)
    # Built outside the block below: schedulers keep their tables on the CPU (EulerDiscrete's
    # set_timesteps turns alphas_cumprod into a NumPy array, which fails for a CUDA tensor).
    scheduler = build_scheduler(arm.resolved_scheduler, SD15_SCHEDULER)
    with torch.device(device):  # initialise straight on the GPU: seconds, not a minute
        unet = UNet2DConditionModel(
            sample_size=64,
            cross_attention_dim=768,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            attention_head_dim=8,
        )
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            sample_size=512,
        )
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
    pipe.vae.enable_slicing()
    pipe.set_progress_bar_config(disable=True)
    return Renderer(
        arm=arm,
        pipe=pipe,
        sources=ModelSources(base_model="random SD1.5", motion_adapter="random MotionAdapter()"),
        device=device,
        width=arm.width,
        height=arm.height,
        load_s=time.perf_counter() - started,
    )


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
