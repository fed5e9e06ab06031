"""The optional `text_similarity` measure: how well a clip's frames match its prompt, by a CLIP
model, computed by the render worker in the GPU stage while the frames are in hand.

Off unless VIDARENA_CLIP_MODEL names a CLIP model (a local folder or a Hugging Face hub id, loaded
with transformers' `CLIPModel.from_pretrained` / `CLIPProcessor.from_pretrained`, the real
loading path; tests load a tiny random-weight CLIP saved by `save_tiny_clip` through it). The
value is the cosine similarity between the prompt's CLIP text embedding and each frame's CLIP
image embedding, averaged over the frames (-1 to 1; CLIPScore is 100 times this, floored at 0).
Its version is TEXT_SIMILARITY_VERSION joined with a short hash of the model's name, so values
from different models never pass for one another.

Never fails a render: a scorer that cannot load or score logs the error and the clip is done
without the measure. The app never imports this module (torch lives in workers/ only), so
`vidarena clips measure` does not backfill it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from app.clips import service as clips_service
from app.clips.measures import Measured
from app.config import Settings
from app.db import get_engine, session_scope
from workers.pipelines.base import resolve_device
from workers.pipelines.tiny import build_tokenizer

log = logging.getLogger(__name__)
NAME = "text_similarity"
TEXT_SIMILARITY_VERSION = "1"


class ClipScorer:
    """A CLIP model and its processor, loaded once per worker process and model."""

    def __init__(self, model: str, *, device: str | None = None) -> None:
        self.device = resolve_device(device)
        self.model = CLIPModel.from_pretrained(model)
        # torch's own methods: transformers wraps PreTrainedModel.to and .eval untyped.
        torch.nn.Module.to(self.model, self.device)
        torch.nn.Module.train(self.model, False)
        self.processor = CLIPProcessor.from_pretrained(model)
        digest = hashlib.sha256(model.encode()).hexdigest()[:8]
        self.version = f"{TEXT_SIMILARITY_VERSION}+{digest}"

    @torch.inference_mode()
    def similarity(self, prompt: str, frames: Sequence[Image.Image]) -> float:
        """Mean over frames of the cosine similarity of the frame's and the prompt's embeddings."""
        inputs = self.processor(
            text=[prompt],
            images=[frame.convert("RGB") for frame in frames],
            return_tensors="pt",
            padding=True,
            truncation=True,
        )
        output = self.model(**{key: value.to(self.device) for key, value in inputs.items()})
        # CLIPModel returns both embeddings normalised to unit length.
        cosines = output.image_embeds @ output.text_embeds.T
        return float(cosines.float().mean().item())


@functools.lru_cache(maxsize=2)
def scorer(model: str) -> ClipScorer:
    return ClipScorer(model)


def record_text_similarity(
    *, settings: Settings, clip_id: int, prompt: str, frames: Sequence[Image.Image]
) -> None:
    """Score the frames against the prompt and store the measure, when a CLIP model is set."""
    if not settings.clip_model:
        return
    try:
        clip_scorer = scorer(settings.clip_model)
        value = clip_scorer.similarity(prompt, frames)
        with session_scope(get_engine(settings)) as session:
            clips_service.record_measures(
                session=session,
                clip_id=clip_id,
                measures={NAME: Measured(value, clip_scorer.version)},
            )
    except Exception:
        log.exception("clip %s: no %s measure (VIDARENA_CLIP_MODEL)", clip_id, NAME)


def save_tiny_clip(folder: Path, *, seed: int = 0) -> Path:
    """A tiny random-weight CLIP (built from CLIPConfig) and its processor, saved with
    save_pretrained to `folder`, to be loaded like a real one. For tests and demos only."""
    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "max_position_embeddings": 77,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        },
        vision_config={
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
        },
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor = CLIPProcessor(  # type: ignore[no-untyped-call]  # untyped upstream
        image_processor=image_processor, tokenizer=tokenizer
    )
    processor.save_pretrained(folder)
    return folder
