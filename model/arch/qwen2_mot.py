"""The Qwen2 Mixture-of-Transformers decoder: every layer holds an understanding and a generation expert.

Tokens are routed by modality, not by a learned router: :class:`Routing` says which rows of the packed hidden
states belong to which expert. When the rows of each expert are contiguous (the generation query puts its latent
tokens first) each expert runs one dense matmul per projection with no gather or scatter.

Attention is delegated to an ``attend(layer_idx, q, k, v)`` callable so that one module serves the KV-cache
prefill, the cached denoising query and the packed training forward (see :mod:`model.run.attention`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..config import LLMConfig
from .layers import RMSNorm, RotaryEmbedding, SwiGLU, apply_rope

Selector = slice | torch.Tensor
AttendFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _count(sel: Selector, length: int) -> int:
    if isinstance(sel, slice):
        return len(range(*sel.indices(length)))
    return int(sel.numel())


@dataclass(frozen=True)
class Routing:
    """Which rows of a packed sequence of ``length`` tokens use the understanding / generation expert."""

    und: Selector
    gen: Selector
    length: int

    @staticmethod
    def all_und(length: int) -> Routing:
        return Routing(slice(0, length), slice(0, 0), length)

    @staticmethod
    def from_mask(is_gen: torch.Tensor) -> Routing:
        """Routing from a bool [n] vector (True = generation expert); uses slices when the rows are blocks."""
        n = int(is_gen.numel())
        gen_idx = torch.nonzero(is_gen, as_tuple=False).flatten()
        und_idx = torch.nonzero(~is_gen, as_tuple=False).flatten()
        if gen_idx.numel() == 0:
            return Routing.all_und(n)
        if und_idx.numel() == 0:
            return Routing(slice(0, 0), slice(0, n), n)
        return Routing(und_idx, gen_idx, n)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Routing:
        """The same routing with its index tensors on ``device`` (device-map hooks call this)."""

        def move(sel: Selector) -> Selector:
            return sel if isinstance(sel, slice) else sel.to(device, non_blocking=non_blocking)

        return Routing(move(self.und), move(self.gen), self.length)

    @property
    def has_und(self) -> bool:
        return _count(self.und, self.length) > 0

    @property
    def has_gen(self) -> bool:
        return _count(self.gen, self.length) > 0

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _select(x, self.und), _select(x, self.gen)

    def merge(self, und_part: torch.Tensor | None, gen_part: torch.Tensor | None) -> torch.Tensor:
        parts = [(s, p) for s, p in ((self.und, und_part), (self.gen, gen_part)) if p is not None and p.shape[0]]
        if len(parts) == 1:
            return parts[0][1]
        if all(isinstance(s, slice) for s, _ in parts):
            parts.sort(key=lambda sp: sp[0].start or 0)
            return torch.cat([p for _, p in parts], dim=0)
        ref = parts[0][1]
        out = ref.new_empty((self.length, *ref.shape[1:]))
        for sel, part in parts:
            out = out.index_copy(0, sel, part) if not isinstance(sel, slice) else _slice_assign(out, sel, part)
        return out


def _select(x: torch.Tensor, sel: Selector) -> torch.Tensor:
    return x[sel] if isinstance(sel, slice) else x.index_select(0, sel)


def _slice_assign(out: torch.Tensor, sel: slice, part: torch.Tensor) -> torch.Tensor:
    idx = torch.arange(out.shape[0], device=out.device)[sel]
    return out.index_copy(0, idx, part)


class MoTAttention(nn.Module):
    """q/k/v/o projections and q/k RMSNorms of both experts (released names: ``<x>`` and ``<x>_moe_gen``)."""

    def __init__(self, cfg: LLMConfig):
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        for suffix in ("", "_moe_gen"):
            setattr(self, f"q_proj{suffix}", nn.Linear(d, cfg.num_heads * hd, bias=True))
            setattr(self, f"k_proj{suffix}", nn.Linear(d, cfg.num_kv_heads * hd, bias=True))
            setattr(self, f"v_proj{suffix}", nn.Linear(d, cfg.num_kv_heads * hd, bias=True))
            setattr(self, f"o_proj{suffix}", nn.Linear(cfg.num_heads * hd, d, bias=False))
            setattr(self, f"q_norm{suffix}", RMSNorm(hd, cfg.rms_norm_eps))
            setattr(self, f"k_norm{suffix}", RMSNorm(hd, cfg.rms_norm_eps))

    def project(self, a: torch.Tensor, gen: bool, fp32: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One expert's q, k (after the q/k norm) and v for normed inputs ``a`` [n, D].

        ``fp32``: the released "gen" precision path (any chunk holding latent tokens, markers included): q/k are
        normed and then rotated in float32. Otherwise ("und": text and ViT chunks) they stay in the model dtype.
        """
        s = "_moe_gen" if gen else ""
        n = a.shape[0]
        q = getattr(self, f"q_proj{s}")(a).view(n, self.num_heads, self.head_dim)
        k = getattr(self, f"k_proj{s}")(a).view(n, self.num_kv_heads, self.head_dim)
        v = getattr(self, f"v_proj{s}")(a).view(n, self.num_kv_heads, self.head_dim)
        if fp32:
            q, k = q.float(), k.float()
        return getattr(self, f"q_norm{s}")(q), getattr(self, f"k_norm{s}")(k), v


class MoTDecoderLayer(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        d, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.input_layernorm = RMSNorm(d, eps)
        self.input_layernorm_moe_gen = RMSNorm(d, eps)
        self.self_attn = MoTAttention(cfg)
        self.post_attention_layernorm = RMSNorm(d, eps)
        self.post_attention_layernorm_moe_gen = RMSNorm(d, eps)
        self.mlp = SwiGLU(d, cfg.intermediate_size)
        self.mlp_moe_gen = SwiGLU(d, cfg.intermediate_size)

    def forward(
        self,
        x: torch.Tensor,
        routing: Routing,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attend: AttendFn,
        layer_idx: int,
    ) -> torch.Tensor:
        """x: [n, D] packed hidden states -> [n, D]."""
        q, k, v = layer_qkv(self, x, routing, cos, sin)
        return layer_finish(self, x, attend(layer_idx, q, k, v), routing)


def layer_qkv(
    layer: MoTDecoderLayer, x: torch.Tensor, routing: Routing, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A layer's work before attention: per-expert input norm, q/k/v projections, q/k norm and RoPE.

    A free function of the layer (not a method) so that one compiled graph serves every layer: the layer's
    weights are its inputs (:mod:`model.run.accel`, regional compilation)."""
    attn = layer.self_attn
    xu, xg = routing.split(x)
    fp32 = routing.has_gen
    pu = attn.project(layer.input_layernorm(xu), False, fp32) if routing.has_und else (None, None, None)
    pg = attn.project(layer.input_layernorm_moe_gen(xg), True, fp32) if routing.has_gen else (None, None, None)
    q, k, v = (routing.merge(u, g) for u, g in zip(pu, pg, strict=True))
    q = apply_rope(q, cos, sin).to(x.dtype)  # [n, Hq, hd]
    k = apply_rope(k, cos, sin).to(x.dtype)  # [n, Hkv, hd]
    return q, k, v.to(x.dtype)


def layer_finish(layer: MoTDecoderLayer, x: torch.Tensor, o: torch.Tensor, routing: Routing) -> torch.Tensor:
    """A layer's work after attention ``o`` [n, Hq*hd]: per-expert output projection, residual, norm and MLP."""
    attn = layer.self_attn
    ou, og = routing.split(o)
    h = x + routing.merge(
        attn.o_proj(ou) if routing.has_und else None, attn.o_proj_moe_gen(og) if routing.has_gen else None
    )
    hu, hg = routing.split(h)
    mu = layer.mlp(layer.post_attention_layernorm(hu)) if routing.has_und else None
    mg = layer.mlp_moe_gen(layer.post_attention_layernorm_moe_gen(hg)) if routing.has_gen else None
    return h + routing.merge(mu, mg)


@dataclass(frozen=True)
class Regions:
    """Replacements of :func:`layer_qkv` and :func:`layer_finish` (compiled versions) for the calls that opt in."""

    qkv: Callable = layer_qkv
    finish: Callable = layer_finish


class Qwen2MoTModel(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(MoTDecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.norm_moe_gen = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden: torch.Tensor,
        routing: Routing,
        position_ids: torch.Tensor,
        attend: AttendFn,
        regions: Regions | None = None,
    ) -> torch.Tensor:
        """Run every layer and the per-expert final norm. hidden: [n, D]; position_ids: [n] RoPE positions;
        ``regions``: the layers' work around attention done by these functions (compiled) instead."""
        cos, sin = self.rotary_emb(position_ids, hidden.dtype)
        for i, layer in enumerate(self.layers):
            if self.gradient_checkpointing and self.training:
                hidden = torch.utils.checkpoint.checkpoint(
                    layer, hidden, routing, cos, sin, attend, i, use_reentrant=False
                )
            elif regions is not None:
                q, k, v = regions.qkv(layer, hidden, routing, cos, sin)
                hidden = regions.finish(layer, hidden, attend(i, q, k, v), routing)
            else:
                hidden = layer(hidden, routing, cos, sin, attend, i)
        hu, hg = routing.split(hidden)
        return routing.merge(
            self.norm(hu) if routing.has_und else None, self.norm_moe_gen(hg) if routing.has_gen else None
        )


class Qwen2MoTForCausalLM(nn.Module):
    """Key prefix ``language_model.``: ``model.*`` and the untied ``lm_head``."""

    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.model = Qwen2MoTModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
