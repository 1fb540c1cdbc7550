"""Random-weight models: a reader that stands in for a checkpoint, the pipeline built from it at any architecture
and loading mode, and the mid-size architecture the CPU suites measure."""

from __future__ import annotations

import zlib

import torch

from sigma_studio.model.arch.autoencoder import AutoEncoder
from sigma_studio.model.arch.layers import sincos_table_2d
from sigma_studio.model.config import ArchConfig, LLMConfig, ResizeSpec, VAEConfig
from sigma_studio.model.request.tokens import Tokenizer
from sigma_studio.model.run.pipeline import SigmaPipeline
from sigma_studio.model.weights.fp8 import quantize_fp8_
from sigma_studio.model.weights.loader import build_model, materialize
from sigma_studio.model.weights.modes import QUANT_MODES, device_map_for, probe


def random_reader(model, seed: int = 0, std: float = 0.02, device: torch.device | None = None):
    """read(key) -> a random tensor of that parameter's shape (norm weights 1, the sin-cos tables computed).

    On a GPU the numbers are drawn there (a 7B model's 14 B values take seconds, not the minutes of a CPU); the
    values differ from the CPU's but are as repeatable."""
    device = device or torch.device("cpu")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}

    def read(key: str) -> torch.Tensor:
        shape = shapes[key]
        if key.endswith("pos_embed"):
            return sincos_table_2d(int(shape[0] ** 0.5), shape[1]).to(device)
        if "norm" in key and key.endswith("weight"):
            return torch.ones(shape, device=device)
        g = torch.Generator(device).manual_seed(zlib.crc32(f"{seed}/{key}".encode()))  # same weights every run
        return torch.randn(shape, generator=g, device=device) * std

    return read, list(shapes)


def build_pipeline(arch: ArchConfig, mode: str, device: torch.device, max_gpu_memory: str | None) -> SigmaPipeline:
    """A pipeline of ``arch`` with random weights, loaded in ``mode`` (bf16, nf4, int8, offload, cpu, ...)."""
    dtype = torch.float32 if device.type == "cpu" and mode not in QUANT_MODES else torch.bfloat16
    meta = build_model(arch, "meta", dtype)
    read, keys = random_reader(meta, device=device if device.type == "cuda" else None)
    # quantising and offloading take their tensors from the CPU, as from a checkpoint file
    home = device if mode not in QUANT_MODES + ("offload", "multi-gpu") else torch.device("cpu")
    cast = lambda k: read(k).to(dtype).to(home)  # noqa: E731
    if mode in ("offload", "multi-gpu"):
        device_map = device_map_for(meta, mode, probe(), max_gpu_memory, dtype)
        model = materialize(meta, cast, keys, device, dtype, "dispatch", device_map, "/tmp/sigma-bench-offload")
    else:
        model = materialize(meta, cast, keys, device, dtype, mode if mode in QUANT_MODES else "plain")
    if mode == "fp8":
        quantize_fp8_(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        vae = AutoEncoder(arch.vae).to(device).eval().requires_grad_(False)
    return SigmaPipeline(model, vae, Tokenizer.byte_level(), name="bench", device=device, mode=mode)


def mid() -> ArchConfig:
    """A mid-size BAGEL-MoT without the ViT (SIGMA's shape): big enough that the matmuls, not Python, dominate."""
    return ArchConfig(
        llm=LLMConfig(
            hidden_size=512, num_layers=6, num_heads=8, num_kv_heads=2, intermediate_size=1536, vocab_size=320
        ),  # fmt: skip
        vit=None,
        vae=VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, z_channels=4, scale_factor=0.6, shift_factor=0.08),
        max_latent_size=32,
        vae_transform=ResizeSpec(256, 128, 16),
        vit_slot_transform=ResizeSpec(224, 112, 14),
        default_layout="trained",
    )
