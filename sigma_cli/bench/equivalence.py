"""The equivalence check: the optimised path (guidance branches batched in one forward) against the plain path
(one forward per branch), as the relative error of the final latents on one seed of case (b)."""

from __future__ import annotations

import torch

from sigma_studio.model.request.build import build_request
from sigma_studio.model.run.pipeline import SigmaPipeline

from .cases import case_inputs


def equivalence(pipe: SigmaPipeline, size: int, steps: int) -> float:
    """Relative error between the optimised (batched branches) and the plain path on one seed (case b)."""
    inputs, cfg = case_inputs("b", size, steps)
    request = build_request(**inputs, arch=pipe.arch, config=cfg.replace(seed=3))
    return relative_error(pipe._generate(request).latents, pipe._generate(request, batch_branches=False).latents)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|a - b| / |b|`` in float32: every suite's measure of two results' difference (``b`` the reference)."""
    return float((a.float() - b.float()).norm() / b.float().norm())
