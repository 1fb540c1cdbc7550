"""Where the metrics' models come from: the Hugging Face hub, DreamSim's and pyiqa's own downloads, or a loader the
caller passes (the tests pass tiny random models built from configs, so nothing is downloaded).

Hub models are fetched through :func:`model.hub.snapshot`, so a model that is neither cached nor downloadable is
one :class:`~model.hub.WeightsUnavailableError` line naming the command that fetches it; :func:`build_metrics`
turns it into a line for that metric and runs the others.

A loader is ``loader(kind, model_id) -> (model, processor)``:

* ``clip`` / ``siglip`` / ``dino`` / ``dinov2``: a transformers model (``CLIPModel``, ``SiglipModel``, ``ViTModel``,
  ``Dinov2Model``) and its processor (an object with ``image_processor`` and ``tokenizer``, or an image processor);
* ``depth``: ``(estimate(image) -> depth image or (H, W) array, None)``;
* ``dreamsim``: ``(model with .embed(pixels) -> (N, D), preprocess(image) -> (1, 3, 224, 224) in [0, 1])``;
* ``musiq``: ``(score(pixels (1, 3, H, W) in [0, 1]) -> tensor, None)``.
"""

from __future__ import annotations

import functools
import os
import zipfile
from pathlib import Path

from ..errors import MissingDependencyError, SigmaError
from ..hub import HubOptions, WeightsUnavailableError, offline, snapshot
from .base import ModelLoader

# kind -> (transformers model class, processor class, what it is called in messages)
TRANSFORMERS_KINDS: dict[str, tuple[str, str, str]] = {
    "clip": ("CLIPModel", "AutoProcessor", "The CLIP model"),
    "siglip": ("SiglipModel", "AutoProcessor", "The SigLIP model"),
    "dino": ("ViTModel", "AutoImageProcessor", "The DINO model"),
    "dinov2": ("Dinov2Model", "AutoImageProcessor", "The DINOv2 model"),
}
HUB_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model")  # configs, weights, BPE merges, sentencepiece
LEGACY_WEIGHTS = ("pytorch_model.bin",)  # fetched only for a repository that has no safetensors
LEAVE_OUT = "or leave this metric out (--metrics)"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def download_command(model_id: str, cache_dir: str | None = None, patterns=HUB_PATTERNS) -> str:
    """The command that fetches a metric model's files where there is network access."""
    include = " ".join(f"'{p}'" for p in patterns)
    return f"hf download {model_id} --include {include}" + (f" --cache-dir {cache_dir}" if cache_dir else "")


def hub_loader(cache_dir: str | None = None, device: str = "cpu") -> ModelLoader:
    """The default loader: hub models through :func:`model.hub.snapshot`, DreamSim and pyiqa through their own
    packages; every failure is a one-line :class:`SigmaError`."""

    def load(kind: str, model_id: str):
        if kind in TRANSFORMERS_KINDS:
            return _transformers(kind, model_id, cache_dir, device)
        if kind == "depth":
            return _depth(model_id, cache_dir, device), None
        if kind == "dreamsim":
            return _dreamsim(model_id, cache_dir, device)
        if kind == "musiq":
            return _pyiqa(model_id, device), None
        raise ValueError(f"unknown metric model kind {kind!r}")

    return load


def shared(loader: ModelLoader) -> ModelLoader:
    """``loader`` loading each (kind, model_id) once, so that clip_t, clip_i and clip_iqa share one CLIP (a
    failure is remembered too, and reported for each metric that needs the model)."""
    done: dict[tuple[str, str], object] = {}

    def load(kind: str, model_id: str):
        key = (kind, model_id)
        if key not in done:
            try:
                done[key] = loader(kind, model_id)
            except SigmaError as exc:
                done[key] = exc
        if isinstance(done[key], SigmaError):
            raise done[key]
        return done[key]

    return load


def _transformers(kind: str, model_id: str, cache_dir: str | None, device: str):
    import transformers

    model_class, processor_class, what = TRANSFORMERS_KINDS[kind]
    opts = HubOptions(cache_dir=cache_dir)
    local = snapshot(model_id, HUB_PATTERNS, opts, what, download_command(model_id, cache_dir), LEAVE_OUT)
    if not any(local.glob("*.safetensors")):  # an older repository that ships only pytorch_model.bin
        patterns = (*HUB_PATTERNS, *LEGACY_WEIGHTS)
        local = snapshot(model_id, patterns, opts, what, download_command(model_id, cache_dir, patterns), LEAVE_OUT)
    try:
        model = getattr(transformers, model_class).from_pretrained(local, local_files_only=True)
        processor = getattr(transformers, processor_class).from_pretrained(local, local_files_only=True)
    except (OSError, ValueError, ImportError) as exc:
        raise WeightsUnavailableError(f"{what} in {local} does not load ({first_line(exc)})") from None
    return model.to(device).eval(), processor


def _depth(model_id: str, cache_dir: str | None, device: str):
    """:func:`model.request.control.estimate_depth` (the ``--depth`` estimator), once its model is known to be here."""
    from ..request.control import DEFAULT_DEPTH_MODEL, DEPTH_PATTERNS, estimate_depth

    command = "sigma download depth" + ("" if model_id == DEFAULT_DEPTH_MODEL else f" --depth-model {model_id}")
    command += f" --cache-dir {cache_dir}" if cache_dir else ""
    snapshot(model_id, DEPTH_PATTERNS, HubOptions(cache_dir=cache_dir), "The depth model", command, LEAVE_OUT)
    return functools.partial(estimate_depth, model_id=model_id, device=device, cache_dir=cache_dir)


def dreamsim_dir(cache_dir: str | None) -> Path:
    """Where DreamSim keeps its weights (its own default, ./models, would depend on the working folder)."""
    if cache_dir:
        return Path(cache_dir) / "dreamsim"
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "dreamsim"


def import_package(module: str, extra: str | None, feature: str):
    """Import an optional package; not installed -> MissingDependencyError, installed but broken (typically a
    torchvision built for another torch: "operator torchvision::nms does not exist") -> one SigmaError line."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(module, extra, feature) from None
    except (RuntimeError, OSError, AttributeError) as exc:
        import torch

        raise SigmaError(
            f"{feature} cannot import {module} ({type(exc).__name__}: {first_line(exc)}): reinstall it with a "
            f"torchvision built for this torch ({torch.__version__})"
        ) from None


def _dreamsim(model_id: str, cache_dir: str | None, device: str):
    dreamsim = import_package("dreamsim", "eval", "The dreamsim metric").dreamsim
    where = dreamsim_dir(cache_dir)
    fetch = (
        f"run `python -c \"from dreamsim import dreamsim; dreamsim(dreamsim_type='{model_id}', "
        f"cache_dir='{where}', device='cpu')\"` where there is network access, {LEAVE_OUT}"
    )
    marker = where / ("ensemble_lora" if model_id == "ensemble" else f"{model_id}_single_lora")
    if offline() and not marker.is_dir():
        raise WeightsUnavailableError(f"DreamSim ({model_id}): not in {where}, and the network is off: {fetch}")
    where.mkdir(parents=True, exist_ok=True)
    try:
        model, preprocess = dreamsim(pretrained=True, device=device, cache_dir=str(where), dreamsim_type=model_id)
    except (OSError, RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise WeightsUnavailableError(f"DreamSim ({model_id}) does not load ({first_line(exc)}): {fetch}") from None
    return model, preprocess


def _pyiqa(model_id: str, device: str):
    import torch

    pyiqa = import_package("pyiqa", None, f"The {model_id} metric")
    try:
        return pyiqa.create_metric(model_id, device=torch.device(device), as_loss=False)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise WeightsUnavailableError(
            f"pyiqa's {model_id} does not load ({first_line(exc)}): pyiqa fetches its weights on first use, so "
            f"run it once where there is network access, {LEAVE_OUT}"
        ) from None
