"""The packed training forward: many samples in one sequence, per-sample attention, flow-matching targets.

Tensor names follow the released ``Bagel.forward`` arguments so a packed batch can be checked field by field
against the reference. One sequence holds every sample of a batch; the attention mask keeps samples apart.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from ..arch.bagel import Bagel
from ..arch.qwen2_mot import Routing
from ..images import patchify
from .attention import PackedAttention
from .engine import attribute_rows
from .sequence import Block


@dataclass
class PackedBatch:
    """One packed sequence of ``sequence_length`` tokens (all index tensors are positions in it)."""

    sequence_length: int
    packed_text_ids: torch.Tensor  # [n_text] token ids of text and marker tokens
    packed_text_indexes: torch.Tensor  # [n_text]
    packed_position_ids: torch.Tensor  # [L] RoPE positions
    packed_vae_token_indexes: torch.Tensor  # [n_vae] latent tokens (clean references and noised targets)
    packed_latent_position_ids: torch.Tensor  # [n_vae]
    packed_timesteps: torch.Tensor  # [n_vae] raw draws; -inf = clean (t = 0)
    patchified_vae_latent_shapes: list[tuple[int, int]]  # per VAE image, in order
    padded_images: torch.Tensor  # [n_images, 3, Hmax, Wmax] VAE inputs, zero padded
    mse_loss_indexes: torch.Tensor  # [n_mse]
    attention_mask: torch.Tensor  # bool [L, L]
    packed_vit_tokens: torch.Tensor | None = None  # [n_vit, 3*p*p]
    packed_vit_token_indexes: torch.Tensor | None = None
    packed_vit_position_ids: torch.Tensor | None = None
    vit_token_seqlens: list[int] | None = None
    ce_loss_indexes: torch.Tensor | None = None
    packed_label_ids: torch.Tensor | None = None
    ce_loss_weights: torch.Tensor | None = None
    blocks: tuple[Block, ...] = ()  # every sample's blocks end to end (they tile the sequence)
    num_samples: int = 1

    def to(self, device: torch.device) -> PackedBatch:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to(device) if isinstance(v, torch.Tensor) else v
        return PackedBatch(**out)


@dataclass
class ForwardOutput:
    mse: torch.Tensor | None  # [n_mse, P] per element
    mse_preds: torch.Tensor | None
    mse_target: torch.Tensor | None
    ce: torch.Tensor | None  # [n_ce]
    ce_logits: torch.Tensor | None
    input_embeddings: torch.Tensor  # [L, D]
    last_hidden: torch.Tensor  # [L, D] after the final per-expert norm
    clean_latents: torch.Tensor  # [n_vae, P]
    t: torch.Tensor  # [n_vae] flow time after sigmoid and shift


def pack_latents(padded_latent: torch.Tensor, shapes: list[tuple[int, int]], p: int) -> torch.Tensor:
    """Crop each image's latent to its own grid and patchify: [n_images, C, H, W] -> [sum h*w, p*p*C]."""
    return torch.cat([patchify(padded_latent[k, :, : h * p, : w * p], p) for k, (h, w) in enumerate(shapes)], 0)


def flow_time(raw: torch.Tensor, shift: float) -> torch.Tensor:
    """Logit-normal time: ``sigmoid(raw)`` warped by the shift; raw -inf gives exactly 0 (a clean latent)."""
    t = torch.sigmoid(raw.float())
    return shift * t / (1 + (shift - 1) * t)


def packed_forward(
    model: Bagel,
    batch: PackedBatch,
    padded_latent: torch.Tensor,
    flow_noise: torch.Tensor,
    timestep_shift: float,
) -> ForwardOutput:
    """The released training forward (spec §10.4) on one packed batch.

    Args:
        padded_latent: the VAE encoding of ``batch.padded_images`` [n_images, C, H/8, W/8] (frozen VAE).
        flow_noise: standard-normal noise for every latent token [n_vae, P] (clean ones included).
    """
    cfg = model.cfg
    dtype = model.dtype
    device = batch.packed_position_ids.device
    hidden = torch.zeros(batch.sequence_length, cfg.llm.hidden_size, device=device, dtype=dtype)
    hidden = hidden.index_copy(0, batch.packed_text_indexes, model.embed_text(batch.packed_text_ids).to(dtype))
    und_index = [batch.packed_text_indexes]
    if batch.packed_vit_token_indexes is not None and batch.packed_vit_token_indexes.numel():
        und_index.append(batch.packed_vit_token_indexes)
        if cfg.vit is not None:  # without a ViT the slot rows stay zero vectors, as in the released trainer
            vit = model.embed_vit(batch.packed_vit_tokens, batch.packed_vit_position_ids, batch.vit_token_seqlens)
            hidden = hidden.index_copy(0, batch.packed_vit_token_indexes, vit.to(dtype))
    clean = pack_latents(padded_latent.float(), batch.patchified_vae_latent_shapes, cfg.latent_patch_size)
    t = flow_time(batch.packed_timesteps, timestep_shift)
    noisy = (1 - t[:, None]) * clean + t[:, None] * flow_noise.float()
    latent_emb = model.embed_latents(noisy, t, batch.packed_latent_position_ids)
    hidden = hidden.index_copy(0, batch.packed_vae_token_indexes, latent_emb.to(dtype))
    if cfg.attribute_projection:  # the same rows as at inference (reference latents and ViT slots)
        if sum(b.length for b in batch.blocks) != batch.sequence_length:
            raise ValueError("PackedBatch.blocks must tile the sequence when the attribute projection is on")
        hidden = hidden + attribute_rows(model, batch.blocks).to(dtype)
    routing = Routing(torch.cat(und_index).sort().values, batch.packed_vae_token_indexes, batch.sequence_length)
    last = model.decode(hidden, routing, batch.packed_position_ids, PackedAttention(batch.attention_mask))
    mse = preds = target = None
    if batch.mse_loss_indexes.numel():
        preds = model.velocity(last.index_select(0, batch.mse_loss_indexes)).float()
        is_target = t > 0
        target = (flow_noise.float() - clean)[is_target]
        mse = (preds - target) ** 2
    ce = logits = None
    if batch.ce_loss_indexes is not None and batch.ce_loss_indexes.numel():
        logits = model.language_model.lm_head(last.index_select(0, batch.ce_loss_indexes)).float()
        ce = F.cross_entropy(logits, batch.packed_label_ids, reduction="none")
    return ForwardOutput(mse, preds, target, ce, logits, hidden, last, clean, t)


def reduce_losses(
    out: ForwardOutput,
    batch: PackedBatch,
    world_size: int = 1,
    total_mse: int | None = None,
    total_ce: float | None = None,
    reweight: bool = False,
) -> dict[str, torch.Tensor]:
    """Per-token means over the whole (global) batch, as the released trainer reduces them (spec §10.5)."""
    losses: dict[str, torch.Tensor] = {}
    if out.mse is not None:
        n = total_mse if total_mse is not None else out.mse.shape[0]
        losses["mse"] = out.mse.mean(-1).sum() * world_size / n
    if out.ce is not None:
        if reweight and batch.ce_loss_weights is not None:
            w = batch.ce_loss_weights.float()
            losses["ce"] = (out.ce * w).sum() * world_size / (total_ce if total_ce is not None else w.sum())
        else:
            n = total_ce if total_ce is not None else out.ce.shape[0]
            losses["ce"] = out.ce.sum() * world_size / n
    return losses
