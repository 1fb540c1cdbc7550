"""SigLIP NaViT vision encoder (BAGEL's understanding path) and the connector into the LLM.

Key names follow the released checkpoint: ``vit_model.vision_model.*``. The patch embedding is stored in its
Linear form [hidden, 3*p*p] whose input is a patch flattened in (row, column, channel) order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ViTConfig


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class SiglipEmbeddings(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.patch_embedding = nn.Linear(3 * cfg.patch_size**2, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_patches_per_side**2, cfg.hidden_size)

    def forward(self, patches: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.patch_embedding(patches.to(self.patch_embedding.weight.dtype)) + self.position_embedding(
            position_ids
        )


class SiglipAttention(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        d = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor, seqlens: list[int]) -> torch.Tensor:
        n, d = x.shape
        h = self.num_heads
        q, k, v = (p(x).view(n, h, d // h).transpose(0, 1) for p in (self.q_proj, self.k_proj, self.v_proj))
        outs = []
        start = 0
        for length in seqlens:  # attention is full within one image and never across images
            sl = slice(start, start + length)
            outs.append(F.scaled_dot_product_attention(q[:, sl], k[:, sl], v[:, sl]))
            start += length
        o = torch.cat(outs, dim=1).transpose(0, 1).reshape(n, d)  # [n, d]
        return self.out_proj(o)


class SiglipMLP(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_tanh(self.fc1(x)))


class SiglipEncoderLayer(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg)

    def forward(self, x: torch.Tensor, seqlens: list[int]) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), seqlens)
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(cfg) for _ in range(cfg.num_layers))


class SiglipVisionTransformer(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.embeddings = SiglipEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


class SiglipVisionModel(nn.Module):
    """Packed images in, per-patch features out: [n, 3*p*p] -> [n, hidden]."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.vision_model = SiglipVisionTransformer(cfg)

    def forward(self, patches: torch.Tensor, position_ids: torch.Tensor, seqlens: list[int]) -> torch.Tensor:
        vm = self.vision_model
        x = vm.embeddings(patches, position_ids)
        for layer in vm.encoder.layers:
            x = layer(x, seqlens)
        return vm.post_layernorm(x)


class Connector(nn.Module):
    """ViT features -> LLM hidden size: ``fc2(gelu_tanh(fc1(z)))``."""

    def __init__(self, vit_hidden: int, llm_hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(vit_hidden, llm_hidden)
        self.fc2 = nn.Linear(llm_hidden, llm_hidden)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_tanh(self.fc1(z)))
