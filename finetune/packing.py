"""Packing samples into one sequence per step, with per-sample attention (no sample sees another).

Within a sample: causal text, full attention inside each image block, the noised target invisible to every
other block, and SIGMA's group-scoped mask when enabled (the same mask builder as inference).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.nn.functional as F

from sigma_studio.model.config import MASK_SCOPE, ArchConfig
from sigma_studio.model.images import grid_position_ids
from sigma_studio.model.request.tokens import TokenIds
from sigma_studio.model.run.masks import TokenTable, allowed, token_table
from sigma_studio.model.run.packed import PackedBatch

from .data import TrainSample

K = TypeVar("K")


def batches(items: Iterable[tuple[K, TrainSample]], max_tokens: int) -> Iterator[tuple[list[TrainSample], K | None]]:
    """Greedy packing of (position, sample) pairs: add samples until the next would exceed ``max_tokens``.

    Yields each batch with the position of the first sample it does not hold (where a resumed run restarts);
    ``None`` after the last batch of a finite stream.
    """
    current: list[TrainSample] = []
    used = 0
    for pos, s in items:
        if current and used + s.num_tokens > max_tokens:
            yield current, pos
            current, used = [], 0
        current.append(s)
        used += s.num_tokens
    if current:
        yield current, None


@dataclass
class _Columns:
    """The per-token (and per-image) lists :func:`pack` fills, sample after sample."""

    text_ids: list = field(default_factory=list)
    text_idx: list = field(default_factory=list)
    positions: list = field(default_factory=list)
    vae_idx: list = field(default_factory=list)
    latent_pos: list = field(default_factory=list)
    timesteps: list = field(default_factory=list)
    shapes: list = field(default_factory=list)
    images: list = field(default_factory=list)
    vit_idx: list = field(default_factory=list)
    vit_pos: list = field(default_factory=list)
    vit_tokens: list = field(default_factory=list)
    vit_lens: list = field(default_factory=list)
    mse_idx: list = field(default_factory=list)
    ce_idx: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    ce_w: list = field(default_factory=list)

    def text(self, block, at: int, text_loss: bool) -> None:
        n = block.length
        self.text_ids += block.token_ids
        self.text_idx += range(at, at + n)
        if text_loss:
            self.ce_idx += range(at, at + n - 1)
            self.labels += block.token_ids[1:]
            self.ce_w += [1 / math.sqrt(n - 1)] * (n - 1)

    def image(self, block, at: int, sample: TrainSample, ids: TokenIds, arch: ArchConfig, vit_grid: int) -> None:
        self.text_ids += [ids.start_of_image, ids.end_of_image]
        self.text_idx += [at, at + block.length - 1]
        inner = list(range(at + 1, at + block.length - 1))
        h, w = block.grid
        if block.kind in ("vae", "noise"):
            self.vae_idx += inner
            self.latent_pos += grid_position_ids(h, w, arch.max_latent_size).tolist()
            raw = sample.raw_timestep if block.kind == "noise" else float("-inf")
            self.timesteps += [raw] * len(inner)
            self.shapes.append((h, w))
            self.images.append(sample.vae_images[block.part])
            if block.kind == "noise":
                self.mse_idx += inner
        else:
            self.vit_idx += inner
            self.vit_pos += grid_position_ids(h, w, vit_grid).tolist()
            self.vit_tokens.append(sample.vit_patches[block.part])
            self.vit_lens.append(len(inner))


def pack(
    samples: list[TrainSample], arch: ArchConfig, ids: TokenIds, group_mask: bool = False, scope: str = MASK_SCOPE
) -> PackedBatch:
    """Lay the samples end to end and build every index tensor of :class:`PackedBatch`; ``group_mask`` and its
    ``scope`` give the attention mask the model learns under (the same function inference uses)."""
    c = _Columns()
    blocks = []
    tables: list[TokenTable] = []
    offset = block_offset = 0
    vit_grid = arch.vit.max_patches_per_side if arch.vit is not None else arch.vit_slot_grid
    for k, sample in enumerate(samples):
        tables.append(token_table(sample.plan, sample=k, block_offset=block_offset))
        block_offset += len(sample.plan.blocks)
        blocks += sample.plan.blocks
        for block, start in zip(sample.plan.blocks, sample.plan.offsets(), strict=True):
            c.positions += block.positions()
            if block.kind == "text":
                c.text(block, offset + start, sample.text_loss or block.plan)
            else:
                c.image(block, offset + start, sample, ids, arch, vit_grid)
        offset += sample.plan.length
    table = TokenTable.concat(tables)
    long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return PackedBatch(
        sequence_length=offset,
        packed_text_ids=long(c.text_ids),
        packed_text_indexes=long(c.text_idx),
        packed_position_ids=long(c.positions),
        packed_vae_token_indexes=long(c.vae_idx),
        packed_latent_position_ids=long(c.latent_pos),
        packed_timesteps=torch.tensor(c.timesteps, dtype=torch.float32),
        patchified_vae_latent_shapes=c.shapes,
        padded_images=pad_images(c.images),
        mse_loss_indexes=long(c.mse_idx),
        attention_mask=allowed(table, table, group_mask=group_mask, scope=scope),
        packed_vit_tokens=torch.cat(c.vit_tokens) if c.vit_tokens else None,
        packed_vit_token_indexes=long(c.vit_idx),
        packed_vit_position_ids=long(c.vit_pos),
        vit_token_seqlens=c.vit_lens,
        ce_loss_indexes=long(c.ce_idx),
        packed_label_ids=long(c.labels),
        ce_loss_weights=torch.tensor(c.ce_w, dtype=torch.float32),
        blocks=tuple(blocks),
        num_samples=len(samples),
    )


def pad_images(images: list[torch.Tensor]) -> torch.Tensor:
    """Zero-pad [3, H, W] images to the largest height and width: [n, 3, Hmax, Wmax] (one VAE batch)."""
    if not images:
        return torch.zeros(0, 3, 16, 16)
    hmax = max(i.shape[1] for i in images)
    wmax = max(i.shape[2] for i in images)
    return torch.stack([F.pad(i, (0, wmax - i.shape[2], 0, hmax - i.shape[1])) for i in images])
