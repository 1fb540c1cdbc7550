"""The BAGEL / SIGMA network: the MoT decoder plus the glue that turns images and time into tokens.

Module and parameter names reproduce the released ``ema.safetensors`` keys exactly, so the released checkpoints
load with strict matching. This file holds modules only; sequence building, caching and sampling live elsewhere.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ArchConfig
from .layers import PositionTable, TimestepEmbedder
from .qwen2_mot import AttendFn, Qwen2MoTForCausalLM, Routing
from .siglip_navit import Connector, SiglipVisionModel


class Bagel(nn.Module):
    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.llm.hidden_size
        self.language_model = Qwen2MoTForCausalLM(cfg.llm)
        self.time_embedder = TimestepEmbedder(d)
        self.vae2llm = nn.Linear(cfg.patch_latent_dim, d)
        self.llm2vae = nn.Linear(d, cfg.patch_latent_dim)
        self.latent_pos_embed = PositionTable(cfg.max_latent_size, d)
        if cfg.vit is not None:
            self.vit_model = SiglipVisionModel(cfg.vit)
            self.connector = Connector(cfg.vit.hidden_size, d)
            self.vit_pos_embed = PositionTable(cfg.vit.max_patches_per_side, d)
        if cfg.attribute_projection:
            # SIGMA eq. 4: one learned vector per attribute token, added to the tokens of its image.
            self.attribute_embed = nn.Embedding(cfg.num_attribute_tokens, d)

    def enable_attribute_projection(self) -> None:
        """Add SIGMA's attribute vectors (zero-initialised, so the model's outputs do not change)."""
        if self.cfg.attribute_projection:
            return
        self.cfg = self.cfg.replace(attribute_projection=True)
        w = self.vae2llm.weight
        self.attribute_embed = nn.Embedding(self.cfg.num_attribute_tokens, self.cfg.llm.hidden_size).to(
            w.device, w.dtype
        )
        nn.init.zeros_(self.attribute_embed.weight)

    @property
    def dtype(self) -> torch.dtype:
        return self.vae2llm.weight.dtype

    def init_fixed_tables(self) -> None:
        """(Re)compute the frozen sin-cos tables and zero the attribute vectors (used for fresh models)."""
        self.latent_pos_embed.reset()
        if self.cfg.vit is not None:
            self.vit_pos_embed.reset()
        if self.cfg.attribute_projection:
            nn.init.zeros_(self.attribute_embed.weight)

    def embed_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """[n] token ids -> [n, D]."""
        return self.language_model.model.embed_tokens(token_ids)

    def embed_latents(self, latents: torch.Tensor, t: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Latent tokens [n, P] at flow times t [n] (0 = clean) -> ``vae2llm(x) + temb(t) + pos`` [n, D]."""
        x = self.vae2llm(latents.to(self.dtype))
        return x + self.time_embedder(t) + self.latent_pos_embed(position_ids)

    def embed_vit(self, patches: torch.Tensor, position_ids: torch.Tensor, seqlens: list[int]) -> torch.Tensor:
        """Packed ViT patches [n, 3*p*p] of several images -> LLM-side tokens [n, D]."""
        features = self.vit_model(patches, position_ids, seqlens)
        return self.connector(features.to(self.dtype)) + self.vit_pos_embed(position_ids)

    def attribute_vectors(self, attribute_ids: torch.Tensor) -> torch.Tensor:
        """Sum of the attribute vectors of ``attribute_ids`` (indices 0..14) -> [D]."""
        return self.attribute_embed(attribute_ids).sum(0)

    def attribute_table(self, sets: list[tuple[int, ...]]) -> torch.Tensor:
        """[len(sets), D]: per set, the sum of its attribute vectors. The embedding runs once over all 15 ids
        whatever the sets hold, so every rank of a sharded run makes the same calls."""
        w = self.attribute_embed.weight
        every = self.attribute_embed(torch.arange(self.cfg.num_attribute_tokens, device=w.device))  # [15, D]
        multi_hot = torch.zeros(len(sets), self.cfg.num_attribute_tokens, device=w.device, dtype=every.dtype)
        for k, attrs in enumerate(sets):
            if attrs:
                multi_hot[k, list(attrs)] = 1
        return multi_hot @ every

    def forward(self, fn, *args, **kwargs):
        """Run ``fn(self, *args, **kwargs)`` inside this module's forward.

        Our code calls submodules directly (embeddings, layers, heads); going through the root's forward lets
        FSDP2 treat this module as the root, so the sharded units gather and free their weights one by one.
        """
        return fn(self, *args, **kwargs)

    def decode(
        self, hidden: torch.Tensor, routing: Routing, position_ids: torch.Tensor, attend: AttendFn, regions=None
    ) -> torch.Tensor:
        """Run the decoder stack over packed embeddings [n, D]; returns the final per-expert-normed states.
        ``regions``: compiled layer regions (:class:`~model.arch.qwen2_mot.Regions`) for this call."""
        return self.language_model.model(hidden, routing, position_ids, attend, regions)

    def velocity(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final hidden states of latent tokens [n, D] -> predicted velocity [n, P]."""
        return self.llm2vae(hidden)
