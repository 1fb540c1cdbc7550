"""The FLOP model: what one denoising step costs, which steps run the guidance branches, and the device's
measured dense matmul rate that a run's FLOPs are set against (the fraction of the hardware limit)."""

from __future__ import annotations

import time

import torch

from sigma_studio.model.config import ArchConfig, GenerationConfig
from sigma_studio.model.run.sampler import step_scales, timesteps


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


def active_steps(cfg: GenerationConfig) -> list[bool]:
    """Per denoising step, whether the guidance branches run (sampler.GuidanceReuse's schedule)."""
    out, age, have = [], 0, False
    for x in timesteps(cfg.steps, cfg.timestep_shift)[:-1]:
        if step_scales(x, cfg).text <= 1:  # only the full branch: nothing kept for later steps
            out.append(False)
            have, age = False, 1
        elif cfg.guidance_every > 1 and have and age < cfg.guidance_every:
            out.append(False)
            age += 1
        else:
            out.append(True)
            have, age = True, 1
    return out
