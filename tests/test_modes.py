"""Loading modes on the CPU: nf4 / int8 through bitsandbytes' CPU backend, offload to CPU memory and disk through
an accelerate device map, and the ``auto`` choice against simulated GPUs. The CUDA variants are in test_gpu.py."""

from __future__ import annotations

import pytest
import torch

from sigma_studio.model import UnsupportedModeError, load_pipeline
from sigma_studio.model.errors import MissingDependencyError
from sigma_studio.model.presets import bagel_7b_mot, sigma_7b
from sigma_studio.model.weights.loader import save_pipeline
from sigma_studio.model.weights.modes import GPU, DeviceInfo, GiB, choose_mode, weight_bytes

PROMPT = "a <subject>red cube <img1> on grass"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_pipe):
    return save_pipeline(tiny_pipe, tmp_path_factory.mktemp("modes") / "tiny")


@pytest.fixture(scope="module")
def reference(ckpt):
    from PIL import Image

    img = Image.new("RGB", (64, 64), (200, 30, 30))
    pipe = load_pipeline(ckpt, mode="cpu")
    return img, pipe(PROMPT, [img], steps=3, seed=2).latents


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_quantised_modes_on_cpu(ckpt, reference, mode):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    img, ref = reference
    pipe = load_pipeline(ckpt, mode=mode, device="cpu")
    layer = pipe.model.language_model.model.layers[0]
    kind = bnb.nn.Linear4bit if mode == "nf4" else bnb.nn.Linear8bitLt
    assert isinstance(layer.self_attn.q_proj_moe_gen, kind) and isinstance(layer.mlp.up_proj, kind)
    assert isinstance(pipe.model.vae2llm, torch.nn.Linear) and not isinstance(pipe.model.vae2llm, kind)
    assert pipe.model.language_model.model.embed_tokens.weight.dtype == torch.bfloat16
    out = pipe(PROMPT, [img], steps=3, seed=2).latents
    assert torch.isfinite(out).all()
    assert _rel(out, ref) < 0.5  # 4-/8-bit weights in a random 2-layer model: same picture, coarser numbers


def test_offload_to_cpu_and_disk_matches_plain(ckpt, reference, tmp_path):
    img, ref = reference
    pipe = load_pipeline(
        ckpt, mode="offload", device="cpu", dtype=torch.float32, max_cpu_memory="200KB", offload_dir=str(tmp_path)
    )
    assert any(tmp_path.iterdir()), "the budget should have pushed some layers to disk"
    out = pipe(PROMPT, [img], steps=3, seed=2).latents
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_offload_to_disk_needs_a_folder(ckpt):
    with pytest.raises(UnsupportedModeError, match="--offload-dir"):
        load_pipeline(ckpt, mode="offload", device="cpu", max_cpu_memory="200KB")


def _info(*free_gib: float) -> DeviceInfo:
    return DeviceInfo(tuple(GPU(i, "H100", 80 * GiB, int(f * GiB)) for i, f in enumerate(free_gib)))


def test_weight_estimates_for_the_real_model():
    assert weight_bytes(bagel_7b_mot(), "bf16") == 2 * 14_607_260_128
    nf4 = weight_bytes(sigma_7b(), "nf4")
    assert 7 * GiB < nf4 < 10 * GiB  # decoder linears at ~0.56 byte, the rest (no ViT) in bf16


@pytest.mark.parametrize(
    ("free", "has_bnb", "mode"),
    [
        ((), True, "cpu"),
        ((79,), True, "bf16"),
        ((24, 24), True, "multi-gpu"),
        ((24,), True, "int8"),
        ((16,), True, "nf4"),
        ((16,), False, "offload"),
        ((8,), True, "offload"),
    ],
)
def test_auto_mode(free, has_bnb, mode):
    chosen, reason = choose_mode("auto", sigma_7b(), _info(*free), has_bnb)
    assert chosen == mode and reason


def test_explicit_modes_are_checked():
    with pytest.raises(UnsupportedModeError, match="needs a CUDA GPU"):
        choose_mode("bf16", sigma_7b(), _info(), True)
    with pytest.raises(MissingDependencyError, match=r"sigma-studio\[quant\]"):
        choose_mode("nf4", sigma_7b(), _info(40), False)
    with pytest.raises(UnsupportedModeError, match="two visible GPUs"):
        choose_mode("multi-gpu", sigma_7b(), _info(40), True)
    with pytest.raises(UnsupportedModeError, match="not one of"):
        choose_mode("fp4", sigma_7b(), _info(40), True)


def test_offload_budget_is_the_whole_gpu_budget(caplog):
    """--max-gpu-memory bounds the whole GPU use: the weights get what the activation reserve leaves."""
    from sigma_studio.model.presets import PRESETS
    from sigma_studio.model.weights.loader import build_model
    from sigma_studio.model.weights.modes import ACTIVATION_RESERVE, device_map_for, weights_budget

    assert weights_budget(10 * GiB) == 10 * GiB - ACTIVATION_RESERVE
    assert weights_budget(ACTIVATION_RESERVE) == 0
    assert "no room for weights" in caplog.text
    meta = build_model(PRESETS["tiny"](), "meta", torch.bfloat16)
    info = _info(80)
    roomy = device_map_for(meta, "offload", info, f"{(ACTIVATION_RESERVE + GiB) // 2**20}MiB", torch.bfloat16, "8GiB")
    assert set(roomy.values()) - {"cpu"} == {0}  # the tiny weights fit in the 1 GiB left for them
    tight = device_map_for(meta, "offload", info, "5GiB", torch.bfloat16, "8GiB")
    assert set(tight.values()) == {"cpu"}  # nothing left for weights: every layer streams


def test_gpu_budget_must_be_a_size():
    from sigma_studio.model.config import LoaderConfig
    from sigma_studio.model.errors import InputError

    assert LoaderConfig(max_gpu_memory="10GiB").max_gpu_memory == "10GiB"
    with pytest.raises(InputError, match="not a size.*10GiB"):
        LoaderConfig(max_gpu_memory="ten gigs")
