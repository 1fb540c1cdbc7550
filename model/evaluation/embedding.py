"""Metrics on embeddings of transformers models: CLIP-T / CLIP-I / CLIP-IQA, DINO, DINOv2, SigLIP-I / SigLIP-T.

Image–image metrics compare the output with the ground truth when the row has one, else with each reference and
average (:func:`.base.mean_similarity`). Values are cosine similarities (DreamBooth's convention: CLIP-T about 0.3,
not torchmetrics' CLIPScore, which is 100 x max(cosine, 0)).

The features are computed here rather than through torchmetrics' CLIPScore: torchmetrics 1.9 calls
``get_image_features`` and expects a tensor, while transformers 5 returns an output object, so CLIPScore and
CLIP-IQA fail with transformers 5. CLIP-IQA still takes its prompts and its scoring from torchmetrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import MissingDependencyError
from .base import EvalRow, Metric, ModelLoader, Values, mean_similarity, text_prompt
from .loading import hub_loader

CLIP_MODEL = "openai/clip-vit-large-patch14"
SIGLIP_MODEL = "google/siglip-so400m-patch14-384"
DINO_MODEL = "facebook/dino-vits16"
DINOV2_MODEL = "facebook/dinov2-small"
BATCH_SIZE = 16  # images (or texts) per forward pass


def _pooled(out: Any) -> torch.Tensor:
    """transformers 5 returns an output object from get_*_features (pooler_output is the projection), 4 a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@dataclass(frozen=True)
class Encoder:
    """Unit-length embeddings of images and texts from one model; inputs of any size, in batches."""

    kind: str  # clip | siglip | dino | dinov2
    model: Any
    processor: Any  # a processor with image_processor / tokenizer, or an image processor alone
    batch_size: int = BATCH_SIZE

    @property
    def _param(self) -> torch.Tensor:
        return next(self.model.parameters())

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.kind in ("clip", "siglip"):
            return _pooled(self.model.get_image_features(pixel_values=pixels))
        out = self.model(pixel_values=pixels)
        if self.kind == "dino":  # DINO's [CLS] token after the final norm (DreamBooth's DINO score)
            return out.last_hidden_state[:, 0]
        return out.pooler_output  # DINOv2: the normed [CLS] token

    @torch.inference_mode()
    def images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, D) unit vectors, float32 on the CPU."""
        image_processor = getattr(self.processor, "image_processor", self.processor)
        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = [img.convert("RGB") for img in images[start : start + self.batch_size]]
            pixels = image_processor(images=batch, return_tensors="pt")["pixel_values"]
            feats = self._image_features(pixels.to(self._param.device, self._param.dtype))
            chunks.append(F.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(chunks)

    @torch.inference_mode()
    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) unit vectors. SigLIP sees its texts as it was trained: padded to its full length, no mask."""
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        max_length = self.model.config.text_config.max_position_embeddings
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            padding = "max_length" if self.kind == "siglip" else True
            enc = tokenizer(batch, padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
            inputs = {"input_ids": enc["input_ids"].to(self._param.device)}
            if self.kind != "siglip" and "attention_mask" in enc:
                inputs["attention_mask"] = enc["attention_mask"].to(self._param.device)
            chunks.append(F.normalize(_pooled(self.model.get_text_features(**inputs)).float(), dim=-1).cpu())
        return torch.cat(chunks)


def load_encoder(kind: str, model_id: str, loader: ModelLoader | None, cache_dir: str | None, device: str) -> Encoder:
    model, processor = (loader or hub_loader(cache_dir, device))(kind, model_id)
    return Encoder(kind, model.eval(), processor)


def text_image_similarity(encoder: Encoder, rows: list[EvalRow]) -> Values:
    """Cosine of each output with its prompt as plain text; None where the prompt has no text."""
    texts = [text_prompt(row.prompt) for row in rows]
    keep = [i for i, text in enumerate(texts) if text]
    values: Values = [None] * len(rows)
    if keep:
        image_feats = encoder.images([rows[i].output for i in keep])
        text_feats = encoder.texts([texts[i] for i in keep])
        for i, value in zip(keep, (image_feats * text_feats).sum(-1).tolist(), strict=True):
            values[i] = value
    return values


def _image_metric(name: str, label: str, kind: str, model_id: str, mirrors: str, *opts) -> Metric:
    """An image–image cosine metric; ``opts``: loader, cache_dir, device."""
    encoder = load_encoder(kind, model_id, *opts)
    return Metric(
        name=name,
        label=label,
        model=model_id,
        mirrors=mirrors,
        higher_is_better=True,
        score_rows=lambda rows: mean_similarity(rows, encoder.images),
        needs="target or references",
    )


def _text_metric(name: str, label: str, kind: str, model_id: str, mirrors: str, *opts) -> Metric:
    """A text–image cosine metric; ``opts``: loader, cache_dir, device."""
    encoder = load_encoder(kind, model_id, *opts)
    return Metric(
        name=name,
        label=label,
        model=model_id,
        mirrors=mirrors,
        higher_is_better=True,
        score_rows=lambda rows: text_image_similarity(encoder, rows),
        needs="prompt",
    )


def clip_t(*, loader=None, cache_dir=None, device="cpu", model_id: str = CLIP_MODEL) -> Metric:
    mirrors = "SIGMA's CLIP (text–image): cosine of the output and the prompt without tokens or placeholders"
    return _text_metric("clip_t", "CLIP-T", "clip", model_id, mirrors, loader, cache_dir, device)


def clip_i(*, loader=None, cache_dir=None, device="cpu", model_id: str = CLIP_MODEL) -> Metric:
    mirrors = "SIGMA's CLIP-I: CLIP image cosine with the ground truth (no truth: mean over the references)"
    return _image_metric("clip_i", "CLIP-I", "clip", model_id, mirrors, loader, cache_dir, device)


def dino(*, loader=None, cache_dir=None, device="cpu", model_id: str = DINO_MODEL) -> Metric:
    mirrors = "SIGMA's DINO: DINO ViT-S/16 [CLS] cosine (DreamBooth's protocol) with the truth or the references"
    return _image_metric("dino", "DINO", "dino", model_id, mirrors, loader, cache_dir, device)


def dinov2(*, loader=None, cache_dir=None, device="cpu", model_id: str = DINOV2_MODEL) -> Metric:
    mirrors = "SIGMA-GEN's DINO-I: DINOv2 ViT-S/14 [CLS] cosine with the truth or the references (whole image)"
    return _image_metric("dinov2", "DINOv2-I", "dinov2", model_id, mirrors, loader, cache_dir, device)


def siglip_i(*, loader=None, cache_dir=None, device="cpu", model_id: str = SIGLIP_MODEL) -> Metric:
    mirrors = "SIGMA-GEN's SigLIP-I: SigLIP image cosine with the truth or the references"
    return _image_metric("siglip_i", "SigLIP-I", "siglip", model_id, mirrors, loader, cache_dir, device)


def siglip_t(*, loader=None, cache_dir=None, device="cpu", model_id: str = SIGLIP_MODEL) -> Metric:
    mirrors = "SIGMA-GEN's SigLIP-T: SigLIP cosine of the output and the prompt (texts padded to 64 tokens)"
    return _text_metric("siglip_t", "SigLIP-T", "siglip", model_id, mirrors, loader, cache_dir, device)


def clip_iqa(*, loader=None, cache_dir=None, device="cpu", model_id: str = CLIP_MODEL) -> Metric:
    try:
        from torchmetrics.functional.multimodal.clip_iqa import _clip_iqa_compute, _clip_iqa_format_prompts
    except ImportError:
        raise MissingDependencyError("torchmetrics", "eval", "The clip_iqa metric") from None
    encoder = load_encoder("clip", model_id, loader, cache_dir, device)
    prompts, names = _clip_iqa_format_prompts(("quality",))  # ["Good photo.", "Bad photo."]

    def score_rows(rows: list[EvalRow]) -> Values:
        probs = _clip_iqa_compute(encoder.images([r.output for r in rows]), encoder.texts(prompts), names)
        return probs.reshape(-1).tolist()

    return Metric(
        name="clip_iqa",
        label="CLIP-IQA",
        model=model_id,
        mirrors="SIGMA-GEN's CLIP-IQA: softmax of 'Good photo.' vs 'Bad photo.' (torchmetrics' prompts and scale); "
        "the original uses a ResNet-50 CLIP",
        higher_is_better=True,
        score_rows=score_rows,
    )
