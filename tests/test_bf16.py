"""bfloat16 without a GPU: the dtype paths every GPU run takes (bf16 network, float32 autoencoder and latents),
run on the CPU and compared with float32 on the same request and seed.

Bound (measured 2026-11-30): the relative error of the final latents stays under 3 % (tiny: 0.3 % released,
1 % trained layout; the mid model: 0.4 % released, 1.6 % trained). bfloat16 keeps 8 bits of mantissa, so a
per-op rounding of ~0.4 % accumulating over the layers and the denoising steps gives errors of this size; the test
would catch a float32-only code path (a dtype mismatch raises) or an accumulation that blows up.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from sigma_studio.model import GenerationConfig, build_request, load_pipeline

PROMPT = "Place <id>the man <img1> next to <subject>the dog <img2>"
BOUND = 0.03


def refs():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(2)]


def relative_error(fp32, bf16, layout: str) -> float:
    config = GenerationConfig(steps=6, seed=3, layout=layout)
    a, b = (p(build_request(PROMPT, refs(), arch=p.arch, config=config)).latents.float() for p in (fp32, bf16))
    assert torch.isfinite(b).all()
    return float((a - b).norm() / a.norm())


@pytest.mark.parametrize("layout", ["released", "trained"])
def test_tiny_in_bfloat16_matches_float32(layout):
    fp32, bf16 = load_pipeline("tiny"), load_pipeline("tiny", dtype=torch.bfloat16)
    assert bf16.model.dtype == torch.bfloat16
    assert relative_error(fp32, bf16, layout) < BOUND


def test_mid_model_in_bfloat16_matches_float32():
    from sigma_studio.cli.bench.weights import build_pipeline, mid

    fp32 = build_pipeline(mid(), "cpu", torch.device("cpu"), None)
    bf16 = copy.copy(fp32)
    bf16.model = copy.deepcopy(fp32.model).to(torch.bfloat16)  # the network in bf16, the autoencoder in float32
    assert relative_error(fp32, bf16, "trained") < BOUND
