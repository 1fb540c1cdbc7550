"""Running plans through the network: block embeddings, KV-cache prefill and the batched velocity query.

The pipeline decides *what* to run (plans, images, settings); this module knows *how*: which rows go to which
expert, which RoPE positions and masks each block gets, and how the guidance branches share one forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..arch.bagel import Bagel
from ..arch.qwen2_mot import Routing
from ..config import MASK_SCOPE
from ..images import grid_position_ids
from ..request.tokens import TokenIds
from .attention import KVCache, PrefillAttention, QueryAttention
from .masks import block_rows_mask, looks_ahead, token_table
from .sequence import Block, ContextPlan


@dataclass(frozen=True)
class BlockInputs:
    """What the image blocks of a plan need, keyed by prompt part index."""

    latents: dict[int, torch.Tensor]  # part -> clean latent tokens [h*w, P]
    vit_patches: dict[int, torch.Tensor]  # part -> ViT patches [m, 3*p*p]


@dataclass
class Context:
    """A prefilled guidance context: its plan and its cache (with room for the query at the end)."""

    plan: ContextPlan
    cache: KVCache

    @property
    def next_rope(self) -> int:
        return self.plan.next_rope


def _marker_rows(model: Bagel, ids: TokenIds, device: torch.device) -> torch.Tensor:
    return model.embed_text(torch.tensor([ids.start_of_image, ids.end_of_image], device=device))


def attribute_rows(model: Bagel, blocks: Sequence[Block]) -> torch.Tensor:
    """SIGMA eq. 4's attribute vectors for every token of ``blocks`` (laid end to end) -> [sum of lengths, D].

    The one place that decides which rows carry them, shared by the inference prefill and the packed training
    forward so the two cannot disagree: the inner tokens of every reference block (its VAE latents and its ViT
    slot, zero-input or not) get the sum of the vectors of its placement's attribute tokens; text, image markers
    and the noised target get zeros. The embedding table is read whatever the blocks hold, so every rank of a
    sharded run makes the same calls.
    """
    sets = [b.attributes if b.kind in ("vae", "vit") else () for b in blocks]
    table = model.attribute_table(sets)  # [n_blocks, D]
    lengths = torch.tensor([b.length for b in blocks], device=table.device)
    rows = table.repeat_interleave(lengths, dim=0)  # [n_tokens, D]
    inner = torch.cat([_inner_flags(b) for b in blocks]).to(table.device)
    return rows * inner[:, None].to(rows.dtype)


def _inner_flags(block: Block) -> torch.Tensor:
    flags = torch.zeros(block.length, dtype=torch.bool)
    if block.kind != "text":
        flags[1:-1] = True
    return flags


def block_embeddings(
    model: Bagel, block: Block, inputs: BlockInputs, ids: TokenIds, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input embeddings [n, D] of one block and its generation-expert flags [n] (markers use the und expert)."""
    if block.kind == "text":
        hidden = model.embed_text(torch.tensor(block.token_ids, device=device))
        return hidden, torch.zeros(block.length, dtype=torch.bool)
    markers = _marker_rows(model, ids, device)
    h, w = block.grid
    if block.kind in ("vae", "noise"):
        tokens = inputs.latents[block.part]
        pos = grid_position_ids(h, w, model.cfg.max_latent_size).to(device)
        inner = model.embed_latents(tokens, torch.zeros(h * w, device=device), pos)
    elif block.zero_input or model.cfg.vit is None:
        inner = markers.new_zeros((h * w, markers.shape[1]))
    else:
        pos = grid_position_ids(h, w, model.cfg.vit.max_patches_per_side).to(device)
        inner = model.embed_vit(inputs.vit_patches[block.part].to(device), pos, [h * w])
    hidden = torch.cat((markers[:1], inner.to(markers.dtype), markers[1:]), dim=0)
    if model.cfg.attribute_projection:
        hidden = hidden + attribute_rows(model, [block]).to(hidden.dtype)
    is_gen = torch.zeros(block.length, dtype=torch.bool)
    if block.kind in ("vae", "noise"):
        is_gen[1:-1] = True
    return hidden, is_gen


PREFILL_SPAN_TOKENS = 4096


def _spans(plan: ContextPlan, first: int, budget: int) -> list[list[int]]:
    """Consecutive block indices from ``first``, grouped while their tokens fit ``budget`` (a longer block alone)."""
    spans: list[list[int]] = []
    size = 0
    for i in range(first, len(plan.blocks)):
        length = plan.blocks[i].length
        if spans and size + length <= budget:
            spans[-1].append(i)
            size += length
        else:
            spans.append([i])
            size = length
    return spans


@torch.no_grad()
def prefill(
    model: Bagel,
    plan: ContextPlan,
    inputs: BlockInputs,
    ids: TokenIds,
    *,
    device: torch.device,
    query_tokens: int,
    group_mask: bool = False,
    scope: str = MASK_SCOPE,
    reuse: Context | None = None,
    chunked: bool = False,
) -> Context:
    """Fill a cache with the plan's blocks, several blocks per forward (up to ``PREFILL_SPAN_TOKENS`` rows, their
    rows of the plan's mask), or one block per forward with ``chunked`` (the released code's way). Both compute
    the same function up to float rounding; fewer, larger forwards are faster, and the span cap bounds the
    attention memory of long contexts.

    ``reuse``: a context whose plan starts with this plan's blocks; its first rows are copied once instead of
    recomputed (the released text-dropped context is such a prefix).

    Under the group mask's ``"intent"`` scope an attribute token sees its image, which comes after it: the whole
    plan is then one forward (no span can end between the two), and no prefix is reused (a prefix's attribute token
    saw an image that the shorter plan may not hold).
    """
    ahead = looks_ahead(group_mask, scope)
    if ahead:
        chunked, reuse = False, None
    cfg = model.cfg.llm
    cache = KVCache(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, plan.length + query_tokens, model.dtype)
    table = token_table(plan)
    first = 0
    if reuse is not None and plan.is_prefix_of(reuse.plan):
        first = len(plan.blocks)
        cache.copy_prefix_from(reuse.cache, plan.length)
    offsets = plan.offsets()
    budget = plan.length if ahead else 1 if chunked else PREFILL_SPAN_TOKENS
    for span in _spans(plan, first, budget):
        blocks, start = [plan.blocks[i] for i in span], offsets[span[0]]
        stop = start + sum(b.length for b in blocks)
        hidden, is_gen = zip(*(block_embeddings(model, b, inputs, ids, device) for b in blocks), strict=True)
        mask = block_rows_mask(table, start, stop, group_mask=group_mask, scope=scope)
        mask = None if mask is None else mask.to(device)
        positions = torch.tensor([p for b in blocks for p in b.positions()], device=device)
        attend = PrefillAttention(cache, start, mask)
        model.decode(torch.cat(hidden), Routing.from_mask(torch.cat(is_gen).to(device)), positions, attend)
    cache.length = plan.length
    return Context(plan, cache)


class QueryStep:
    """The velocity query of a set of guidance contexts, with everything but ``x`` and ``t`` prepared once.

    Rows are laid out [latents of every branch, then the two markers of every branch] so the generation expert
    runs one dense matmul over all branches' latents and the understanding expert one over all markers. The
    contexts may belong to several generations of the same size (a server batching queued requests):
    ``groups[r]`` consecutive contexts are generation r's, queried with its own latents and time. A call only
    runs device work on device tensors (no host copy, no synchronisation), so it can be captured in a CUDA graph
    (:mod:`model.run.graphs`).
    """

    @torch.no_grad()
    def __init__(
        self, model: Bagel, contexts: list[Context], grid: tuple[int, int], ids: TokenIds, device, regions=None,
        groups: tuple[int, ...] | None = None,
    ):  # fmt: skip
        self.model, self.contexts, self.regions = model, contexts, regions
        self.groups = groups or (len(contexts),)
        if sum(self.groups) != len(contexts):
            raise ValueError(f"groups {self.groups} do not add up to {len(contexts)} contexts")
        self.n, self.b = grid[0] * grid[1], len(contexts)
        n, b = self.n, self.b
        self.pos = grid_position_ids(*grid, model.cfg.max_latent_size).to(device)
        self.owner = torch.tensor([r for r, k in enumerate(self.groups) for _ in range(k)], device=device)
        self.markers = _marker_rows(model, ids, device)
        self.positions = torch.cat(
            [torch.full((n,), c.next_rope, device=device) for c in contexts]
            + [torch.full((2,), c.next_rope, device=device) for c in contexts]
        )
        self.routing = Routing(und=slice(b * n, b * n + 2 * b), gen=slice(0, b * n), length=b * n + 2 * b)
        self.attend = QueryAttention([c.cache for c in contexts], n)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> list[torch.Tensor]:
        """Velocities [N, P] against each context of the noisy latents ``x`` at time ``t``: ``x`` [N, P] and ``t``
        0-dim for one generation, or [R, N, P] and [R] for the R generations of ``groups``."""
        n, b, model = self.n, self.b, self.model
        r = len(self.groups)
        x, t = x.reshape(r, n, -1), t.reshape(-1).expand(r)
        latents = model.embed_latents(x.reshape(r * n, -1), t.repeat_interleave(n), self.pos.repeat(r))
        # each generation's rows once per branch (offloaded glue layers may leave the latents on another device)
        branch_rows = latents.view(r, n, -1)[self.owner.to(latents.device)].reshape(b * n, -1)
        hidden = torch.cat([branch_rows] + [self.markers] * b, dim=0)  # [b*n + 2b, D]
        out = model.decode(hidden, self.routing, self.positions, self.attend, self.regions)
        return list(model.velocity(out[: b * n]).split(n, dim=0))


def query_velocity(
    model: Bagel,
    contexts: list[Context],
    x: torch.Tensor,
    t: torch.Tensor,
    grid: tuple[int, int],
    ids: TokenIds,
    device: torch.device,
) -> list[torch.Tensor]:
    """Velocities [N, P] of the noisy latents ``x`` [N, P] at time ``t`` against each context, in one forward."""
    return QueryStep(model, contexts, grid, ids, device)(x.to(device), torch.as_tensor(t).to(device))
