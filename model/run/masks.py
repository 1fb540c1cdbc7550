"""PURE attention masks for packed sequences, including SIGMA's group-scoped mask.

Per token we keep: its sample, its block (split), the block's mode (causal / full / noise), the image placement
(group) it belongs to, and the placement whose attribute span it lies in. A key k is visible to a query q iff

* both are in the same sample, and
* k is not after q (causal), or both are in the same full/noise block (bidirectional inside an image), and
* k is not in a noise block other than q's (the noised target is invisible to everything else), and
* with the group mask on (SIGMA eq. 9): q is not an attribute token bound to placement g while k belongs to an
  image block of another placement g' != g. Only the attribute tokens themselves are scoped (``<subject>`` in
  ``<subject>the dog <img2>``); the words around them, like every other text token, stay plainly causal. Patches
  of one image always see each other (eq. 8).
* with the group mask's ``"intent"`` scope (Fig. 2: "each special token can only attend to images within its own
  group"), additionally: an attribute token bound to placement g sees g's image tokens although they come after it,
  so the token and its own image see each other both ways. Under eq. 9 as written (``"eq9"``), the causal order
  hides that image from the token: it sees no image tokens at all.

Masks are boolean (True = may attend); :func:`to_additive` turns one into the 0 / -inf form.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import GROUP_MASK_SCOPES, MASK_SCOPE
from .sequence import ContextPlan

MODE_CODE = {"causal": 0, "full": 1, "noise": 2}


@dataclass(frozen=True)
class TokenTable:
    """Per-token attributes of a packed sequence, each a LongTensor [n]."""

    sample: torch.Tensor
    block: torch.Tensor
    mode: torch.Tensor
    image_group: torch.Tensor
    tag_group: torch.Tensor

    def __len__(self) -> int:
        return int(self.block.numel())

    def rows(self, start: int, stop: int) -> TokenTable:
        return TokenTable(*(t[start:stop] for t in self._fields()))

    def _fields(self) -> tuple[torch.Tensor, ...]:
        return (self.sample, self.block, self.mode, self.image_group, self.tag_group)

    @staticmethod
    def concat(tables: list[TokenTable]) -> TokenTable:
        return TokenTable(*(torch.cat(cols) for cols in zip(*(t._fields() for t in tables), strict=True)))


def token_table(plan: ContextPlan, sample: int = 0, block_offset: int = 0) -> TokenTable:
    """Per-token attributes of one context plan (one sample)."""
    sample_ids, block_ids, modes, groups, tags = [], [], [], [], []
    for i, b in enumerate(plan.blocks):
        n = b.length
        sample_ids += [sample] * n
        block_ids += [block_offset + i] * n
        modes += [MODE_CODE[b.attn_mode]] * n
        groups += [b.group if b.kind != "text" else -1] * n
        row_tags = [-1] * n
        if b.kind == "text":
            for j in b.tag_offsets:
                row_tags[j] = b.tag_group
        tags += row_tags
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return TokenTable(*(as_long(x) for x in (sample_ids, block_ids, modes, groups, tags)))


def allowed(
    q: TokenTable, k: TokenTable, q_start: int = 0, *, group_mask: bool = False, scope: str = MASK_SCOPE
) -> torch.Tensor:
    """Bool [len(q), len(k)]: may query row i (at sequence index q_start + i) attend to key j (index j).
    ``scope`` (with ``group_mask``) is one of :data:`~model.config.GROUP_MASK_SCOPES`."""
    if scope not in GROUP_MASK_SCOPES:
        raise ValueError(f"group mask scope {scope!r}: one of {', '.join(GROUP_MASK_SCOPES)}")
    qi = torch.arange(len(q)) + q_start
    kj = torch.arange(len(k))
    same_block = q.block[:, None] == k.block[None, :]
    bidirectional = same_block & (q.mode[:, None] != MODE_CODE["causal"])
    ok = (kj[None, :] <= qi[:, None]) | bidirectional
    if group_mask and scope == "intent":
        ok |= (q.tag_group[:, None] >= 0) & (q.tag_group[:, None] == k.image_group[None, :])
    ok &= q.sample[:, None] == k.sample[None, :]
    ok &= ~((k.mode[None, :] == MODE_CODE["noise"]) & ~same_block)
    if group_mask:
        cross = (q.tag_group[:, None] >= 0) & (k.image_group[None, :] >= 0)
        ok &= ~(cross & (q.tag_group[:, None] != k.image_group[None, :]))
    return ok


def plan_mask(plan: ContextPlan, *, group_mask: bool = False, scope: str = MASK_SCOPE) -> torch.Tensor:
    """The dense bool mask [n, n] of one context plan."""
    table = token_table(plan)
    return allowed(table, table, group_mask=group_mask, scope=scope)


def looks_ahead(group_mask: bool, scope: str) -> bool:
    """Whether a token may see keys after it outside its own block (then a prefill must take every row at once)."""
    return group_mask and scope == "intent"


def block_rows_mask(
    table: TokenTable, start: int, stop: int, *, group_mask: bool = False, scope: str = MASK_SCOPE
) -> torch.Tensor | None:
    """Rows start:stop of the mask against keys 0:stop (what a chunked prefill of that block needs).

    Returns ``None`` when every key is visible (the attention kernel then needs no mask).
    """
    mask = allowed(table.rows(start, stop), table.rows(0, stop), start, group_mask=group_mask, scope=scope)
    return None if bool(mask.all()) else mask


def to_additive(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Bool mask -> 0 where allowed, -inf elsewhere."""
    out = torch.zeros(mask.shape, dtype=dtype)
    return out.masked_fill_(~mask, float("-inf"))
