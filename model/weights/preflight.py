"""A model's architecture from its configs alone: what :func:`model.request.build.build_request` checks input against
before any weight is read or downloaded.

A local directory (or the shipped ``shapes`` model) is read exactly (JSON configs and the safetensors header,
never the tensors). A hub source is read exactly when it is in the cache; otherwise the preset of the released
model stands in (SIGMA and every BAGEL derivative share its image geometry), and the CLI checks the request again
once the real weights are loaded.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ArchConfig, LoaderConfig
from ..hub import ALIASES, BACKBONE_REPO, MODEL_CHOICES, HubOptions, WeightsUnavailableError, resolve
from ..presets import bagel_7b_mot, sigma_7b, tiny

__all__ = ["MODEL_CHOICES", "preflight_arch", "same_geometry"]


def preflight_arch(cfg: LoaderConfig) -> ArchConfig:
    """The :class:`ArchConfig` that ``load_pipeline(cfg)`` will build, without loading or downloading weights."""
    from .arch_config import source_arch

    if cfg.model == "tiny" and not Path(cfg.model).exists():
        arch = tiny()
        return arch.replace(vit=None) if cfg.visual_und is False else arch
    opts = HubOptions(cfg.cache_dir, cfg.token, cfg.revision, local_files_only=True)
    try:
        src = resolve(cfg.model, opts)
    except WeightsUnavailableError:  # not cached: the released geometry
        if cfg.model.lower() == "sigma":
            return sigma_7b()
        bagel = ALIASES.get(cfg.model.lower(), cfg.model) == BACKBONE_REPO
        return bagel_7b_mot() if bagel else bagel_7b_mot().replace(skills=None)  # another repo: its geometry only
    weights = Path(cfg.weights) if cfg.weights else src.weights
    return source_arch(src, weights, visual_und=cfg.visual_und)


def same_geometry(a: ArchConfig, b: ArchConfig) -> bool:
    """Whether a request built for ``a`` is laid out and sized the same for ``b``."""
    keys = ("vae_transform", "pixels_per_token", "max_image_size")
    return all(getattr(a, k) == getattr(b, k) for k in keys)
