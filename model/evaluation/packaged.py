"""Metrics whose package brings its own model and downloads its own weights: DreamSim and pyiqa's MUSIQ.

``dreamsim`` is in the ``eval`` extra. ``pyiqa`` is not in any extra (its requirements pull ``opencv-python`` next to
our ``opencv-python-headless``, plus datasets, numba, pre-commit, ruff...): ``pip install pyiqa`` to use ``musiq``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import EvalRow, Metric, ModelLoader, Values, mean_similarity, unit_tensor
from .loading import hub_loader

DREAMSIM_TYPE = "ensemble"  # DINO + CLIP + OpenCLIP ViT-B/16, DreamSim's default and best-performing variant
MUSIQ_MODEL = "musiq"  # pyiqa's MUSIQ trained on KonIQ-10k
DREAMSIM_BATCH = 8


def dreamsim(
    *, loader: ModelLoader | None = None, cache_dir: str | None = None, device: str = "cpu", model_id: str = ""
) -> Metric:
    model_id = model_id or DREAMSIM_TYPE
    model, preprocess = (loader or hub_loader(cache_dir, device))("dreamsim", model_id)
    param = next(model.parameters())

    @torch.inference_mode()
    def embed(images) -> torch.Tensor:
        chunks = []
        for start in range(0, len(images), DREAMSIM_BATCH):
            pixels = torch.cat([preprocess(img.convert("RGB")) for img in images[start : start + DREAMSIM_BATCH]])
            feats = model.embed(pixels.to(param.device, param.dtype)).reshape(pixels.shape[0], -1)  # (B, D)
            chunks.append(F.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(chunks)

    def score_rows(rows: list[EvalRow]) -> Values:
        # DreamSim's distance is 1 - cosine of its embeddings; the mean over references is 1 - the mean cosine
        return [None if v is None else 1.0 - v for v in mean_similarity(rows, embed)]

    return Metric(
        name="dreamsim",
        label="DreamSim",
        model=f"dreamsim:{model_id}",
        mirrors="SIGMA's DreamSim: distance (1 - cosine, lower is closer) of the output to the ground truth, or the "
        "mean over the references",
        higher_is_better=False,
        score_rows=score_rows,
        needs="target or references",
    )


def musiq(*, loader: ModelLoader | None = None, cache_dir: str | None = None, device: str = "cpu") -> Metric:
    score, _ = (loader or hub_loader(cache_dir, device))("musiq", MUSIQ_MODEL)

    @torch.inference_mode()
    def one(row: EvalRow) -> float:
        return float(score(unit_tensor(row.output)[None].to(device)).reshape(-1)[0])

    return Metric(
        name="musiq",
        label="MUSIQ",
        model=f"pyiqa:{MUSIQ_MODEL}",
        mirrors="SIGMA-GEN's MUSIQ: pyiqa's MUSIQ (KonIQ-10k) on the output at its own size",
        higher_is_better=True,
        score_rows=lambda rows: [one(row) for row in rows],
    )
