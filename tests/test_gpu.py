"""CUDA paths of the loader (run with ``pytest -m gpu`` on a machine with a GPU; skipped elsewhere).

They load a tiny checkpoint in every GPU mode and check that generation runs, stays close to the float32 CPU
result, and report the peak GPU memory of each mode.
"""

from __future__ import annotations

import pytest
import torch

from sigma_studio.model import load_pipeline
from sigma_studio.model.weights.loader import save_pipeline

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
PROMPT = "a <subject>red cube <img1> on grass"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_pipeline(load_pipeline("tiny"), tmp_path_factory.mktemp("gpu") / "tiny")


@pytest.fixture(scope="module")
def reference(ckpt):
    from PIL import Image

    img = Image.new("RGB", (64, 64), (200, 30, 30))
    return img, load_pipeline(ckpt, mode="cpu")(PROMPT, [img], steps=4, seed=2).latents


@pytest.mark.parametrize("mode", ["bf16", "nf4", "int8", "offload"])
def test_gpu_modes(ckpt, reference, mode, tmp_path):
    if mode in ("nf4", "int8"):
        pytest.importorskip("bitsandbytes")
    img, ref = reference
    torch.cuda.reset_peak_memory_stats()
    extra = {"max_gpu_memory": "1MiB", "offload_dir": str(tmp_path)} if mode == "offload" else {}
    pipe = load_pipeline(ckpt, mode=mode, **extra)
    assert pipe.device.type == "cuda" and pipe.mode == mode
    out = pipe(PROMPT, [img], steps=4, seed=2).latents.cpu()
    rel = float((out - ref).norm() / ref.norm())
    peak = torch.cuda.max_memory_allocated() / 2**20
    print(f"{mode}: relative difference to fp32 CPU {rel:.4f}, peak GPU memory {peak:.1f} MiB")
    assert torch.isfinite(out).all() and rel < 0.5


def test_auto_picks_bf16_for_a_tiny_model(ckpt):
    pipe = load_pipeline(ckpt, mode="auto")
    assert pipe.mode == "bf16" and "free" in pipe.mode_reason
