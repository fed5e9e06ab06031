"""Render pipelines: one module per pipeline kind, and `get_renderer`, the one way in.

    renderer = get_renderer(arm)                      # loads weights once per process
    rendered = renderer.render(prompt="...", seed=42, on_step=lambda step, total: ...)
    rendered.frames, rendered.telemetry

`tiny=True` renders with tiny random-weight stand-ins (see `workers.pipelines.tiny`), loaded through
the same code as real weights. Weights that cannot be had raise `MissingWeightsError` (permanent).
"""

from __future__ import annotations

import gc
import time
from collections import OrderedDict
from pathlib import Path
from types import ModuleType

import torch
from diffusers.pipelines.animatediff.pipeline_animatediff import (  # see base.py's imports
    AnimateDiffPipeline,
)

from app.studies.schemas import ArmSpec
from workers.pipelines import animatediff, lightning
from workers.pipelines import tiny as tiny_models
from workers.pipelines.base import (
    MissingWeightsError,
    ModelSources,
    Rendered,
    Renderer,
    build_scheduler,
    choose_dtype,
    prepare_pipeline,
    resolve_device,
)

__all__ = ["MissingWeightsError", "Rendered", "Renderer", "clear_cache", "get_renderer"]

PIPELINES: dict[str, ModuleType] = {"animatediff": animatediff, "animatediff-lightning": lightning}
# Distinct weight sets kept loaded per process (least recently used goes first). An A/B study
# needs two; arms that differ only in steps, guidance or scheduler share one set.
MAX_LOADED_WEIGHTS = 2
WARM_UP_PROMPT = "warm-up"

_cache: OrderedDict[tuple[object, ...], Renderer] = OrderedDict()


def get_renderer(
    arm: ArmSpec,
    *,
    tiny: bool = False,
    device: str | None = None,
    tiny_root: Path | None = None,
    compile_models: bool = False,
) -> Renderer:
    """The arm's renderer, cached per process (the same object for the same arm and options).

    device None means CUDA when available, else the CPU. With `tiny`, the tiny models are built
    under `tiny_root` (default `var/tiny-models/`) on first use. `compile_models` (CUDA only,
    VIDARENA_RENDER_COMPILE) compiles the UNet and VAE decoder and renders one warm-up clip
    here, so the compilation is paid once per process and arm shape, not by a real clip.
    """
    PIPELINES[arm.kind].check_inputs(arm)
    target = resolve_device(device)
    key = (arm, tiny, str(target), str(tiny_root) if tiny else None)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    sources = model_sources(arm, tiny=tiny, tiny_root=tiny_root)
    renderer = _build(arm, sources=sources, device=target, compile_models=compile_models)
    if renderer.compiled:
        started = time.perf_counter()
        renderer.render(prompt=WARM_UP_PROMPT, seed=0)
        renderer.load_s += time.perf_counter() - started
        renderer.reset_load_report()
    _cache[key] = renderer
    _evict()
    return renderer


def model_sources(arm: ArmSpec, *, tiny: bool, tiny_root: Path | None = None) -> ModelSources:
    """Where the arm's weights come from; `tiny` swaps the model ids for local tiny folders."""
    is_lightning = arm.kind == lightning.KIND
    checkpoint = arm.lightning_checkpoint if is_lightning else None
    if not tiny:
        return ModelSources(
            base_model=arm.base_model,
            motion_adapter=arm.motion_adapter,
            checkpoint=checkpoint,
            revision=arm.revision,
        )
    models = tiny_models.ensure_tiny_models(tiny_root)
    adapter = models.lightning if is_lightning else models.motion_adapter
    return ModelSources(
        base_model=str(models.base_model),
        motion_adapter=str(adapter),
        checkpoint=checkpoint,
        adapter_config=str(models.lightning) if is_lightning else None,
        tiny=True,
    )


def clear_cache() -> None:
    """Drop every cached renderer (and, unless still referenced elsewhere, its weights)."""
    _cache.clear()
    _free_memory()


def _build(
    arm: ArmSpec, *, sources: ModelSources, device: torch.device, compile_models: bool
) -> Renderer:
    # Weights are shared with any cached renderer that loaded the same ones onto the same device.
    shared = next((r for r in _cache.values() if (r.sources, r.device) == (sources, device)), None)
    started = time.perf_counter()
    if shared is not None:
        components, base_scheduler_config = shared.pipe.components, shared.base_scheduler_config
        compiled = shared.compiled
    else:
        loaded = PIPELINES[arm.kind].load(sources, dtype=choose_dtype(device))
        loaded.to(device)
        compiled = prepare_pipeline(loaded, device=device, compile_models=compile_models)
        components, base_scheduler_config = loaded.components, loaded.scheduler.config
    scheduler = build_scheduler(arm.resolved_scheduler, base_scheduler_config)
    pipe = AnimateDiffPipeline(**{**components, "scheduler": scheduler})
    # Workers log progress through on_step instead.
    pipe.set_progress_bar_config(disable=True)  # type: ignore[no-untyped-call]  # untyped upstream
    load_s = 0.0 if shared is not None else time.perf_counter() - started
    width, height = (arm.width, arm.height)
    if sources.tiny:
        width, height = tiny_models.tiny_size(width=arm.width, height=arm.height)
    return Renderer(
        arm=arm,
        pipe=pipe,
        sources=sources,
        device=device,
        width=width,
        height=height,
        load_s=load_s,
        base_scheduler_config=base_scheduler_config,
        compiled=compiled,
    )


def _evict() -> None:
    evicted = False
    while len({(r.sources, r.device) for r in _cache.values()}) > MAX_LOADED_WEIGHTS:
        _cache.popitem(last=False)
        evicted = True
    if evicted:
        _free_memory()


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
