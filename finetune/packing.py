"""Packing samples into one sequence per step, with per-sample attention (no sample sees another).

Within a sample: causal text, full attention inside each image block, the noised target invisible to every
other block, and SIGMA's group-scoped mask when enabled (the same mask builder as inference).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch
import torch.nn.functional as F

from sigma_studio.model.config import ArchConfig
from sigma_studio.model.images import grid_position_ids
from sigma_studio.model.masks import TokenTable, allowed, token_table
from sigma_studio.model.packed import PackedBatch
from sigma_studio.model.tokens import TokenIds

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


def pack(samples: list[TrainSample], arch: ArchConfig, ids: TokenIds, group_mask: bool = False) -> PackedBatch:
    """Lay the samples end to end and build every index tensor of :class:`PackedBatch`."""
    text_ids, text_idx, positions = [], [], []
    vae_idx, latent_pos, timesteps, shapes, images = [], [], [], [], []
    vit_idx, vit_pos, vit_tokens, vit_lens = [], [], [], []
    mse_idx, ce_idx, labels, ce_w = [], [], [], []
    blocks = []
    tables: list[TokenTable] = []
    offset = block_offset = 0
    vit_grid = arch.vit.max_patches_per_side if arch.vit is not None else arch.vit_slot_grid
    for k, sample in enumerate(samples):
        tables.append(token_table(sample.plan, sample=k, block_offset=block_offset))
        block_offset += len(sample.plan.blocks)
        blocks += sample.plan.blocks
        for block, start in zip(sample.plan.blocks, sample.plan.offsets(), strict=True):
            at = offset + start
            positions += block.positions()
            if block.kind == "text":
                n = block.length
                text_ids += block.token_ids
                text_idx += range(at, at + n)
                if sample.text_loss:
                    ce_idx += range(at, at + n - 1)
                    labels += block.token_ids[1:]
                    ce_w += [1 / math.sqrt(n - 1)] * (n - 1)
                continue
            text_ids += [ids.start_of_image, ids.end_of_image]
            text_idx += [at, at + block.length - 1]
            inner = list(range(at + 1, at + block.length - 1))
            h, w = block.grid
            if block.kind in ("vae", "noise"):
                vae_idx += inner
                latent_pos += grid_position_ids(h, w, arch.max_latent_size).tolist()
                raw = sample.raw_timestep if block.kind == "noise" else float("-inf")
                timesteps += [raw] * len(inner)
                shapes.append((h, w))
                images.append(sample.vae_images[block.part])
                if block.kind == "noise":
                    mse_idx += inner
            else:
                vit_idx += inner
                vit_pos += grid_position_ids(h, w, vit_grid).tolist()
                vit_tokens.append(sample.vit_patches[block.part])
                vit_lens.append(len(inner))
        offset += sample.plan.length
    table = TokenTable.concat(tables)
    long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return PackedBatch(
        sequence_length=offset,
        packed_text_ids=long(text_ids),
        packed_text_indexes=long(text_idx),
        packed_position_ids=long(positions),
        packed_vae_token_indexes=long(vae_idx),
        packed_latent_position_ids=long(latent_pos),
        packed_timesteps=torch.tensor(timesteps, dtype=torch.float32),
        patchified_vae_latent_shapes=shapes,
        padded_images=pad_images(images),
        mse_loss_indexes=long(mse_idx),
        attention_mask=allowed(table, table, group_mask=group_mask),
        packed_vit_tokens=torch.cat(vit_tokens) if vit_tokens else None,
        packed_vit_token_indexes=long(vit_idx),
        packed_vit_position_ids=long(vit_pos),
        vit_token_seqlens=vit_lens,
        ce_loss_indexes=long(ce_idx),
        packed_label_ids=long(labels),
        ce_loss_weights=torch.tensor(ce_w, dtype=torch.float32),
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
