"""The FLOP model: what one denoising step costs, which steps run the guidance branches, and the device's
measured dense matmul rate that a run's FLOPs are set against (the fraction of the hardware limit)."""

from __future__ import annotations

import time

import torch

from sigma_studio.model.config import ArchConfig, GenerationConfig
from sigma_studio.model.run.sampler import denoise


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it measures the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device) -> float:
    """Measured dense matmul FLOP/s of the device (bf16 on GPUs, float32 on the CPU), median of several runs."""
    n = 8192 if device.type == "cuda" else 1024
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    times = []
    for _ in range(6):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        sync(device)
        times.append((time.perf_counter() - t0) / 5)
    return 2 * n**3 / sorted(times)[len(times) // 2]


def step_flops(arch: ArchConfig, n_latents: int, context_lengths: list[int]) -> float:
    """FLOPs of one denoising step: per branch, the generation expert over the latents, the understanding expert
    over the two markers, and attention of every query token against its context plus the query."""
    llm = arch.llm
    d, kv = llm.hidden_size, llm.num_kv_heads * llm.head_dim
    per_token = 2 * (d * d * 2 + 2 * d * kv + 3 * d * llm.intermediate_size)  # q,o + k,v + MLP, per layer
    q = n_latents + 2
    total = 0.0
    for ctx in context_lengths:
        total += llm.num_layers * (per_token * q + 4 * q * (ctx + q) * d)
        total += 2 * n_latents * d * arch.patch_latent_dim * 2  # vae2llm and llm2vae
    return total


def evaluated_branches(cfg: GenerationConfig) -> list[tuple[str, ...]]:
    """The branches of each network evaluation a generation makes under ``cfg``: the sampler's own schedule
    (guidance interval, ``guidance_every``, ``forecast_every``), read by running it on a stand-in velocity."""
    asked: list[tuple[str, ...]] = []

    def velocity(x: torch.Tensor, t: torch.Tensor, branches: tuple[str, ...]) -> dict[str, torch.Tensor]:
        asked.append(branches)
        return {b: torch.zeros_like(x) for b in branches}

    denoise(torch.zeros(1, 1), velocity, cfg)
    return asked
