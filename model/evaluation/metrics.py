"""The metric registry of ``sigma eval``: names -> factories, and :func:`build_metrics`, which sets up the chosen
metrics and turns each one that cannot run here (a model not cached offline, a package not installed) into one
line, so that the others still run.

Usage::

    from sigma_studio.model.evaluation.metrics import EvalRow, build_metrics

    metrics, messages = build_metrics(["shapes", "psnr", "clip_t"], device="cuda")
    for metric in metrics:
        values = metric.compute(rows)  # one float (or None) per EvalRow

Which paper setting each metric mirrors is in its ``mirrors`` line; the hub model in its ``model`` field; what it
compares in its ``protocol`` field: the whole image, or each SIGMA-GEN subject's crop or region (the ``*_subjects``
metrics, :mod:`.per_subject`, beside their whole-image counterparts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..errors import InputError, SigmaError
from . import embedding, packaged, per_subject, pixel
from .base import EvalRow, Metric, ModelLoader, text_prompt
from .loading import hub_loader, shared

__all__ = ["METRICS", "EvalRow", "Metric", "ModelLoader", "available_metrics", "build_metrics", "text_prompt"]

# name -> factory(*, loader=None, cache_dir=None, device="cpu") -> Metric; a factory raises SigmaError when its
# model or package is missing. Offline metrics first, then SIGMA's, then SIGMA-GEN's (whole image, then per subject).
METRICS: dict[str, Callable[..., Metric]] = {
    "shapes": pixel.shapes,
    "shapes_strict": pixel.shapes_strict,
    "psnr": pixel.psnr,
    "ssim": pixel.ssim,
    "edge_f1": pixel.edge_f1,
    "clip_t": embedding.clip_t,
    "clip_i": embedding.clip_i,
    "dino": embedding.dino,
    "dreamsim": packaged.dreamsim,
    "dinov2": embedding.dinov2,
    "siglip_i": embedding.siglip_i,
    "siglip_t": embedding.siglip_t,
    "clip_iqa": embedding.clip_iqa,
    "musiq": packaged.musiq,
    "depth_mse": pixel.depth_mse,
    "dinov2_subjects": per_subject.dinov2_subjects,
    "siglip_i_subjects": per_subject.siglip_i_subjects,
    "clip_i_subjects": per_subject.clip_i_subjects,
    "depth_mse_subjects": per_subject.depth_mse_subjects,
}
OFFLINE_METRICS = ("shapes", "shapes_strict", "psnr", "ssim", "edge_f1")  # need no model at all


def available_metrics() -> list[str]:
    """Every metric name, in table order."""
    return list(METRICS)


def build_metrics(
    names: Iterable[str],
    *,
    cache_dir: str | None = None,
    device: str = "cpu",
    loader: ModelLoader | None = None,
) -> tuple[list[Metric], list[str]]:
    """Set up the metrics ``names``; a model is loaded once however many metrics use it.

    Args:
        names: metric names (see :func:`available_metrics`); repeated names count once.
        cache_dir: the Hugging Face cache to read models from (default: HF_HOME's).
        device: where the metric models run ("cpu", "cuda", "cuda:1"...).
        loader: ``loader(kind, model_id) -> (model, processor)`` instead of the hub (tests pass tiny models).
    Returns:
        (the metrics ready to compute, in the order asked; one line per metric that cannot run here, e.g.
        ``clip_t: The CLIP model (openai/clip-vit-large-patch14): not in the cache at ..., and the hub cannot be
        reached: run `hf download ...` where there is network access, or leave this metric out (--metrics)``).
    Raises:
        InputError: a name that is not a metric.
    """
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise InputError(f"Unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    load = shared(loader or hub_loader(cache_dir, device))
    ready, messages = [], []
    for name in names:
        try:
            ready.append(METRICS[name](loader=load, cache_dir=cache_dir, device=device))
        except SigmaError as exc:
            messages.append(f"{name}: {' '.join(str(exc).split())}")
    return ready, messages
