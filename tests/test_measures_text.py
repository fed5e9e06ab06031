"""The optional CLIP text similarity (workers/measure_text.py): a tiny random-weight CLIP saved
with save_pretrained and loaded through the real from_pretrained path (the real weights cannot
exist here), checked against the model's own embeddings; the render worker stores it when
VIDARENA_CLIP_MODEL is set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import select

from app.clips import service as clips_service
from app.clips.dispatch import send_renders
from app.clips.models import Clip, ClipMeasure, ClipStatus
from app.db import session_factory
from tests.kit.services import redis_broker_url
from tests.kit.studies import small_study
from tests.kit.workers import running_worker, wait_until
from workers.measure_text import TEXT_SIMILARITY_VERSION, ClipScorer, save_tiny_clip


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def frames(seed: int, n: int = 4) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]


def test_similarity_is_the_mean_cosine_of_the_models_embeddings(tiny_clip):
    scorer = ClipScorer(str(tiny_clip), device="cpu")
    clip = frames(1)
    got = scorer.similarity("a red fox running", clip)
    # Recomputed by hand: each tower's pooled output through its projection, normalised.
    model, processor = scorer.model, scorer.processor
    text = processor.tokenizer(["a red fox running"], return_tensors="pt", padding=True)
    pixels = processor.image_processor([f.convert("RGB") for f in clip], return_tensors="pt")
    with torch.no_grad():
        t = model.text_projection(model.text_model(**text).pooler_output)
        v = model.visual_projection(
            model.vision_model(pixel_values=pixels["pixel_values"]).pooler_output
        )
    t = t / t.norm(dim=-1, keepdim=True)
    v = v / v.norm(dim=-1, keepdim=True)
    assert got == pytest.approx(float((v @ t.T).mean()), abs=1e-5)
    assert -1 <= got <= 1
    # Deterministic, and it depends on the prompt and on the frames.
    assert scorer.similarity("a red fox running", clip) == got
    assert scorer.similarity("a quiet harbour at dawn", clip) != pytest.approx(got, abs=1e-6)
    assert scorer.similarity("a red fox running", frames(2)) != pytest.approx(got, abs=1e-6)


def test_the_version_names_the_model(tiny_clip, tmp_path):
    version = ClipScorer(str(tiny_clip), device="cpu").version
    assert version.startswith(f"{TEXT_SIMILARITY_VERSION}+") and len(version) <= 32
    other = save_tiny_clip(tmp_path / "other", seed=1)
    assert ClipScorer(str(other), device="cpu").version != version


@pytest.mark.slow
def test_the_render_worker_stores_text_similarity_when_a_model_is_set(
    session, settings, tiny_clip, tmp_path_factory, tmp_path
):
    broker = f"filesystem://{tmp_path / 'broker'}" if settings.is_sqlite else redis_broker_url()
    render_settings = settings.model_copy(
        update={
            "broker_url": broker,
            "var_dir": tmp_path_factory.getbasetemp() / "var-text",
            "render_lease_seconds": 3,
        }
    )
    study = small_study(session)
    ids = clips_service.queue_missing(session=session, study=study, tiny=True)
    session.commit()
    session.close()
    send_renders(settings=render_settings, clips=[(i, True) for i in ids])
    log = tmp_path / "worker.log"
    reader = session_factory(session.get_bind(), read_only=True)

    def all_done() -> bool:
        with reader() as fresh:
            statuses = fresh.scalars(select(Clip.status).where(Clip.id.in_(ids))).all()
            return all(s == ClipStatus.done for s in statuses)

    with running_worker(render_settings, log, VIDARENA_CLIP_MODEL=str(tiny_clip)):
        wait_until(all_done, timeout=240, what="every clip done", log=log)
    rows = session.execute(
        select(ClipMeasure.clip_id, ClipMeasure.value, ClipMeasure.version).where(
            ClipMeasure.name == "text_similarity"
        )
    ).all()
    assert sorted(r.clip_id for r in rows) == sorted(ids)
    expected = ClipScorer(str(tiny_clip), device="cpu").version
    assert all(-1 <= r.value <= 1 and r.version == expected for r in rows)
    by_clip = clips_service.measures_for_study(session=session, study_id=study.id)
    assert all("text_similarity" in by_clip[i] and "motion_mean" in by_clip[i] for i in ids)
