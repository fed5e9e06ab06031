"""Render pipelines on tiny random-weight models, loaded through the real loading code.

Nothing is mocked but the weights: the tiny models are saved in diffusers format and read back with
the same `from_pretrained` / `load_state_dict` calls as real checkpoints.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler

from app.studies.schemas import ArmSpec
from workers.pipelines import MissingWeightsError, clear_cache, get_renderer, model_sources
from workers.pipelines import lightning as lightning_pipeline
from workers.pipelines.tiny import TINY_VERSION, ensure_tiny_models, tiny_size

pytestmark = pytest.mark.slow

COMMON = {"base_model": "emilianJR/epiCRealism", "num_frames": 16, "width": 512, "height": 512}
# The founding study's arms, as their model cards prescribe.
ANIMATEDIFF = ArmSpec(
    name="animatediff",
    kind="animatediff",
    motion_adapter="guoyww/animatediff-motion-adapter-v1-5-2",
    steps=25,
    guidance_scale=7.5,
    fps=8,
    **COMMON,
)
LIGHTNING = ArmSpec(
    name="lightning-4step",
    kind="animatediff-lightning",
    motion_adapter="ByteDance/AnimateDiff-Lightning",
    steps=4,
    guidance_scale=1.0,
    fps=8,
    **COMMON,
)
MISSING = "nobody/does-not-exist"


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-models")
    ensure_tiny_models(root)
    return root


def tiny_renderer(arm: ArmSpec, tiny_root: Path, **update: object):  # type: ignore[no-untyped-def]
    return get_renderer(arm.model_copy(update=update), tiny=True, device="cpu", tiny_root=tiny_root)


def first_unet_input(renderer, *, seed: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """What the UNet really receives at the first step (one copy of a CFG batch)."""
    seen: list[torch.Tensor] = []
    hook = renderer.pipe.unet.register_forward_pre_hook(
        lambda module, args: seen.append(args[0][:1].clone()) if not seen else None
    )
    try:
        renderer.render(prompt="a red fox in snow", seed=seed)
    finally:
        hook.remove()
    return seen[0]


# --- rendering ------------------------------------------------------------------------------


@pytest.mark.parametrize("arm", [ANIMATEDIFF, LIGHTNING], ids=lambda arm: arm.name)
def test_example_arm_renders_its_frames_steps_and_passes(arm: ArmSpec, tiny_root: Path) -> None:
    steps: list[tuple[int, int]] = []
    rendered = tiny_renderer(arm, tiny_root).render(
        prompt="a lighthouse at dusk",
        seed=3,
        on_step=lambda step, total: steps.append((step, total)),
    )
    assert len(rendered.frames) == arm.num_frames
    assert {(frame.mode, frame.size) for frame in rendered.frames} == {("RGB", (64, 64))}
    assert steps == [(step, arm.steps) for step in range(1, arm.steps + 1)]
    telemetry = json.loads(json.dumps(rendered.telemetry))  # JSON-serialisable
    # Observed UNet evaluations: CFG (guidance 7.5) doubles them, guidance 1.0 does not.
    assert telemetry["denoiser_passes"] == arm.denoiser_passes
    assert arm.denoiser_passes == (50 if arm.kind == "animatediff" else 4)
    assert telemetry["steps"] == arm.steps
    assert telemetry["tiny"] is True
    assert (telemetry["device"], telemetry["dtype"]) == ("cpu", "float32")
    assert telemetry["peak_memory_kind"] == "process_peak_rss"
    assert telemetry["peak_memory_bytes"] > 0
    assert telemetry["denoise_s"] > 0 and telemetry["decode_s"] > 0
    assert set(telemetry["models"]) == {"base_model", "motion_adapter", "checkpoint", "revision"}
    assert telemetry["torch_version"] == torch.__version__


def test_every_arm_starts_from_the_same_noise_for_a_seed(tiny_root: Path) -> None:
    animatediff = tiny_renderer(ANIMATEDIFF, tiny_root, num_frames=4, steps=2)
    lightning = tiny_renderer(LIGHTNING, tiny_root, num_frames=4, steps=1)
    first = first_unet_input(animatediff, seed=11)
    # DDIM feeds the noise as is. Euler (trailing) scales it by sigma_max, then its input scaling
    # divides by sqrt(sigma_max^2 + 1): the same noise times 0.9993.
    from_lightning = first_unet_input(lightning, seed=11)
    sigma = float(lightning.pipe.scheduler.sigmas[0])
    assert torch.allclose(first * sigma / (sigma**2 + 1) ** 0.5, from_lightning, atol=1e-5)
    assert torch.allclose(first, animatediff.initial_noise(seed=11), atol=1e-5)
    assert not torch.allclose(first, first_unet_input(animatediff, seed=12), atol=1e-2)


def test_same_seed_same_frames_other_seed_other_frames(tiny_root: Path) -> None:
    renderer = tiny_renderer(LIGHTNING, tiny_root, num_frames=4)

    def pixels(seed: int) -> list[bytes]:
        return [frame.tobytes() for frame in renderer.render(prompt="a boat", seed=seed).frames]

    assert pixels(5) == pixels(5)
    assert pixels(5) != pixels(6)


def test_schedulers_follow_the_model_cards(tiny_root: Path) -> None:
    ddim = tiny_renderer(ANIMATEDIFF, tiny_root).pipe.scheduler
    assert isinstance(ddim, DDIMScheduler)
    assert ddim.config.beta_schedule == "linear"
    assert ddim.config.timestep_spacing == "linspace"
    assert ddim.config.clip_sample is False
    assert ddim.config.steps_offset == 1
    euler = tiny_renderer(LIGHTNING, tiny_root).pipe.scheduler
    assert isinstance(euler, EulerDiscreteScheduler)
    assert euler.config.timestep_spacing == "trailing"
    assert euler.config.beta_schedule == "linear"
    # Everything else comes from the base model's (SD1.5) scheduler config.
    assert (euler.config.beta_start, euler.config.beta_end) == (0.00085, 0.012)


def test_weights_load_once_per_process(tiny_root: Path) -> None:
    clear_cache()
    arm = LIGHTNING.model_copy(update={"num_frames": 2})
    first = get_renderer(arm, tiny=True, device="cpu", tiny_root=tiny_root)
    assert get_renderer(arm, tiny=True, device="cpu", tiny_root=tiny_root) is first
    assert first.load_s > 0
    assert first.render(prompt="a", seed=1).telemetry["load_s"] == round(first.load_s, 4)
    assert first.render(prompt="a", seed=1).telemetry["load_s"] == 0.0  # reported once
    # An arm with the same weights but its own guidance and scheduler shares the weights.
    variant = arm.model_copy(update={"name": "variant", "guidance_scale": 2.0})
    other = get_renderer(variant, tiny=True, device="cpu", tiny_root=tiny_root)
    assert other is not first
    assert other.pipe.unet is first.pipe.unet
    assert other.pipe.scheduler is not first.pipe.scheduler
    assert other.load_s == 0.0


def test_inputs_are_checked_with_the_bad_value(tiny_root: Path) -> None:
    renderer = tiny_renderer(LIGHTNING, tiny_root, num_frames=2)
    with pytest.raises(ValueError, match="prompt"):
        renderer.render(prompt="  ", seed=1)
    with pytest.raises(ValueError, match="-1"):
        renderer.render(prompt="a", seed=-1)
    too_long = tiny_renderer(LIGHTNING, tiny_root, num_frames=40)
    with pytest.raises(ValueError, match="num_frames 40"):
        too_long.render(prompt="a", seed=1)
    with pytest.raises(ValueError, match="'animatediff'"):
        lightning_pipeline.check_inputs(ANIMATEDIFF)


# --- weights that are not there -------------------------------------------------------------


@pytest.mark.parametrize(
    "update",
    [
        {"motion_adapter": MISSING},
        {"base_model": MISSING, "motion_adapter": "LOCAL_ADAPTER"},
    ],
    ids=["motion-adapter", "base-model"],
)
def test_missing_hub_id_offline_is_permanent_and_named(
    update: dict[str, str], tiny_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local_adapter = str(ensure_tiny_models(tiny_root).motion_adapter)
    update = {k: local_adapter if v == "LOCAL_ADAPTER" else v for k, v in update.items()}
    with pytest.raises(MissingWeightsError, match=MISSING) as error:
        get_renderer(ANIMATEDIFF.model_copy(update=update), device="cpu")
    assert f"hf download {MISSING}" in str(error.value)


def test_missing_lightning_checkpoint_offline_names_repo_and_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    arm = LIGHTNING.model_copy(update={"motion_adapter": MISSING})
    with pytest.raises(MissingWeightsError, match=MISSING) as error:
        get_renderer(arm, device="cpu")
    assert arm.lightning_checkpoint in str(error.value)


def test_missing_local_paths_are_named(tmp_path: Path) -> None:
    absent = tmp_path / "no-such-adapter"
    with pytest.raises(MissingWeightsError, match="no-such-adapter"):
        get_renderer(ANIMATEDIFF.model_copy(update={"motion_adapter": str(absent)}), device="cpu")
    empty = tmp_path / "empty-lightning"
    empty.mkdir()
    arm = LIGHTNING.model_copy(update={"motion_adapter": str(empty)})
    with pytest.raises(MissingWeightsError, match=arm.lightning_checkpoint):
        get_renderer(arm, device="cpu")


# --- tiny models ----------------------------------------------------------------------------


def test_tiny_mode_only_swaps_model_ids_for_local_folders(tiny_root: Path) -> None:
    real = model_sources(LIGHTNING.model_copy(update={"revision": "abc123"}), tiny=False)
    assert real.base_model == LIGHTNING.base_model
    assert real.motion_adapter == LIGHTNING.motion_adapter
    assert (real.checkpoint, real.revision) == (LIGHTNING.lightning_checkpoint, "abc123")
    assert real.adapter_config is None  # real Lightning checkpoints fit MotionAdapter()
    tiny = model_sources(LIGHTNING, tiny=True, tiny_root=tiny_root)
    assert Path(tiny.motion_adapter, LIGHTNING.lightning_checkpoint).is_file()
    assert Path(tiny.base_model, "model_index.json").is_file()
    assert tiny.adapter_config == tiny.motion_adapter
    assert model_sources(ANIMATEDIFF, tiny=True, tiny_root=tiny_root).adapter_config is None
    assert tiny_size(width=512, height=768) == (64, 96)
    assert tiny_size(width=64, height=64) == (16, 16)


def test_tiny_cache_survives_concurrent_builders(tmp_path: Path) -> None:
    results: list[Path] = []
    builders = [
        threading.Thread(target=lambda: results.append(ensure_tiny_models(tmp_path).root))
        for _ in range(2)
    ]
    for builder in builders:
        builder.start()
    for builder in builders:
        builder.join()
    assert results == [tmp_path / f"v{TINY_VERSION}"] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"v{TINY_VERSION}"]  # no leftovers


def mean_colour(renderer, *, prompt: str, seed: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Mean R, G, B over every pixel of every frame, in levels 0-255."""
    frames = renderer.render(prompt=prompt, seed=seed).frames
    return np.stack([np.asarray(frame, dtype=float) for frame in frames]).mean(axis=(0, 1, 2))


def test_tiny_arms_share_the_base_and_cannot_be_told_apart_by_colour(tiny_root: Path) -> None:
    animatediff = tiny_renderer(ANIMATEDIFF, tiny_root, num_frames=4)
    lightning = tiny_renderer(LIGHTNING, tiny_root, num_frames=4)
    # Guidance 7.5 against 1.0 on random weights used to tint the AnimateDiff clips magenta
    # (green 15-25 levels lower, blue 14-22 higher than Lightning's).
    for prompt, seed in (("a skateboarder doing a kickflip", 2019024262), ("a fox", 5)):
        difference = mean_colour(animatediff, prompt=prompt, seed=seed) - mean_colour(
            lightning, prompt=prompt, seed=seed
        )
        assert np.abs(difference).max() < 5, (prompt, difference)
    # One base: the same VAE, text encoder and (motion modules aside) UNet weights.
    for name in ("vae", "text_encoder"):
        a = getattr(animatediff.pipe, name).state_dict()
        b = getattr(lightning.pipe, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    a, b = animatediff.pipe.unet.state_dict(), lightning.pipe.unet.state_dict()
    motion = [k for k in a if "motion_modules" in k]
    assert motion and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if k not in motion)
    # The Lightning checkpoint is its own, but close to the adapter it stands for.
    assert any(not torch.equal(a[k], b[k]) for k in motion)
    for key in motion:
        assert torch.linalg.norm(a[key] - b[key]) <= 0.1 * torch.linalg.norm(a[key]) + 1e-6, key


def test_tiny_renders_use_one_cpu_thread_and_restore_the_setting(tiny_root: Path) -> None:
    # Spinning OpenMP threads made tiny renders ~10x slower on a busy 2-core machine.
    before = torch.get_num_threads()
    seen: list[int] = []
    tiny_renderer(LIGHTNING, tiny_root, num_frames=2).render(
        prompt="a", seed=1, on_step=lambda step, total: seen.append(torch.get_num_threads())
    )
    assert seen == [1] * LIGHTNING.steps
    assert torch.get_num_threads() == before


def test_an_exception_from_on_step_aborts_the_clip_cleanly(tiny_root: Path) -> None:
    # How a worker that lost its lease stops rendering: raise from on_step.
    renderer = tiny_renderer(LIGHTNING, tiny_root, num_frames=2)

    def stop(step: int, total: int) -> None:
        raise InterruptedError(f"stopped at {step}/{total}")

    with pytest.raises(InterruptedError, match="stopped at 1/4"):
        renderer.render(prompt="a", seed=1, on_step=stop)
    assert renderer.render(prompt="a", seed=1).telemetry["denoiser_passes"] == 4


# --- speed: batching, cached text embeddings, attention, decode -----------------------------


def frames_array(rendered) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.stack([np.asarray(frame, dtype=np.int16) for frame in rendered.frames])


@pytest.mark.parametrize("arm", [ANIMATEDIFF, LIGHTNING], ids=lambda arm: arm.name)
def test_batched_prompts_render_the_clips_they_render_alone(arm: ArmSpec, tiny_root: Path) -> None:
    renderer = tiny_renderer(arm, tiny_root, num_frames=8)
    prompts, seeds = ["a red fox in snow", "a boat", "the sea at night"], [3, 4, 5]
    batched = renderer.render_batch(prompts=prompts, seeds=seeds)
    alone = [renderer.render(prompt=p, seed=s) for p, s in zip(prompts, seeds, strict=True)]
    for together, single in zip(batched, alone, strict=True):
        difference = np.abs(frames_array(together) - frames_array(single))
        # Equal up to float rounding: the batched matrix products sum in another order (last
        # bits of fp32, ~1e-7 relative), which 25 guided steps grow to ~1e-5; a pixel that
        # close to a rounding boundary moves by one level. Measured: at most 1 level, in at
        # most 0.006% of the values.
        assert difference.max() <= 1
        assert (difference > 0).mean() < 1e-3
        assert together.telemetry["batch_size"] == 3
        assert together.telemetry["denoiser_passes"] == arm.denoiser_passes  # per clip
    # Each clip keeps its own seed's noise: the clips of one batch are far apart.
    assert np.abs(frames_array(batched[0]) - frames_array(batched[1])).mean() > 5


def test_text_embeddings_are_computed_once_per_prompt_and_arm(tiny_root: Path) -> None:
    renderer = tiny_renderer(ANIMATEDIFF, tiny_root, num_frames=2, steps=1, name="embeddings")
    calls: list[int] = []
    hook = renderer.pipe.text_encoder.register_forward_pre_hook(
        lambda module, args: calls.append(int(args[0].shape[0]))
    )
    try:
        renderer.render(prompt="a heron", seed=1)
        assert len(calls) == 2  # the prompt and the arm's negative prompt
        renderer.render(prompt="a heron", seed=2)
        renderer.render_batch(prompts=["a heron", "a heron"], seeds=[3, 4])
        assert len(calls) == 2  # nothing encoded again
        renderer.render(prompt="a crane", seed=1)
        assert len(calls) == 3  # the new prompt only: the negative prompt is the arm's
    finally:
        hook.remove()


def test_attention_is_sdpa_and_the_vae_decodes_without_slicing(tiny_root: Path) -> None:
    renderer = tiny_renderer(LIGHTNING, tiny_root, num_frames=2)
    telemetry = renderer.render(prompt="a", seed=1).telemetry
    assert telemetry["attention"] == ["AttnProcessor2_0"]  # torch's scaled_dot_product_attention
    assert renderer.pipe.vae.use_slicing is False
    assert telemetry["compiled"] is False  # VIDARENA_RENDER_COMPILE is off by default
    assert telemetry["memory_format"] == "contiguous"  # channels-last is for CUDA
