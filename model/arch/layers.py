"""Small building blocks shared by the decoder: RMSNorm, RoPE, SwiGLU, timestep and 2-D sin-cos embeddings."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """RMSNorm that normalises in float32, rounds back to the input dtype, then scales (Qwen2 convention).

    A float32 input therefore gives a float32 output even with bf16 weights (used for q/k norms).
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Plain RoPE with the rotate-half layout.

    The inverse frequencies are recomputed in float32 at every call (64 numbers) rather than kept in a buffer,
    so no ``model.to(bfloat16)`` and no meta-device build can round or lose them.
    """

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta

    def compute_inv_freq(self, device: str | torch.device) -> torch.Tensor:
        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=device).float() / self.head_dim
        return 1.0 / (self.theta**exponent)

    @torch.no_grad()
    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (cos, sin), each [n, head_dim], computed in float32 and rounded to ``dtype``."""
        inv_freq = self.compute_inv_freq(position_ids.device)
        freqs = position_ids.float()[:, None] * inv_freq[None, :]  # [n, head_dim/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [n, heads, head_dim] by per-token ``cos``/``sin`` [n, head_dim]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` without biases."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class TimestepEmbedder(nn.Module):
    """Flow time t in [0, 1] (not multiplied by 1000) -> [cos, sin] features -> two-layer MLP."""

    def __init__(self, hidden: int, frequency_size: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.frequency_size = frequency_size
        self.max_period = max_period

    def sinusoid(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_size // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None, :]
        return torch.cat((torch.cos(args), torch.sin(args)), dim=-1)  # [n, 256], cos half first

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.sinusoid(t).to(self.mlp[0].weight.dtype))


def sincos_table_2d(grid: int, dim: int) -> torch.Tensor:
    """The fixed [grid*grid, dim] table: column half then row half, sines before cosines (float64 -> float32)."""

    def one_d(pos: np.ndarray, half_dim: int) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(half_dim // 2, dtype=np.float64) / (half_dim / 2.0))
        out = np.einsum("m,d->md", pos.astype(np.float64), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    table = np.concatenate([one_d(cols.reshape(-1), dim // 2), one_d(rows.reshape(-1), dim // 2)], axis=1)
    return torch.from_numpy(table.astype(np.float32))


class PositionTable(nn.Module):
    """A frozen 2-D sin-cos table stored in the checkpoint as ``<name>.pos_embed`` [grid*grid, dim]."""

    def __init__(self, grid: int, dim: int):
        super().__init__()
        self.grid = grid
        self.pos_embed = nn.Parameter(torch.zeros(grid * grid, dim), requires_grad=False)

    def reset(self) -> None:
        with torch.no_grad():
            self.pos_embed.copy_(sincos_table_2d(self.grid, self.pos_embed.shape[1]).to(self.pos_embed.dtype))

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.pos_embed[position_ids]
