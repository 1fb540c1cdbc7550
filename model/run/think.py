"""Think mode: the model writes its plan, then draws with it (BAGEL's "think then generate", docs/BAGEL_SPEC.md §8).

The full guidance context is prefilled as usual; text is then decoded greedily from ``<|im_start|>`` until
``<|im_end|>`` (at most :data:`MAX_PLAN_TOKENS` steps, the first being ``<|im_start|>`` itself), one token a
forward against that context's cache in the understanding expert. The decoded plan becomes a text block at the end
of the **full** context only (the guidance contexts stay as they were), so the picture is drawn against the
model's own words. A model trained with plans (``<think>...</think>`` at the end of its training instructions,
:func:`model.request.prompt.split_plan`) has the ``plans`` skill. Unlike the released BAGEL inferencer, no
system prompt is prepended: a model is asked to think the way it was trained to.
"""

from __future__ import annotations

import dataclasses

import torch

from ..arch.bagel import Bagel
from ..arch.qwen2_mot import Routing
from ..config import ArchConfig
from ..request.tokens import TokenIds
from .attention import PrefillAttention
from .engine import BlockInputs, Context, prefill
from .sequence import Block, ContextPlan, GuidancePlans

MAX_PLAN_TOKENS = 1000  # the released think decoding's max_length (its first step is <|im_start|>)


@torch.no_grad()
def write_plan(
    model: Bagel, context: Context, ids: TokenIds, device: torch.device, max_tokens: int = MAX_PLAN_TOKENS
) -> list[int]:
    """Greedy tokens after ``context`` (its cache must have room for ``max_tokens`` more rows), without the
    ``<|im_start|>`` that opens them or the ``<|im_end|>`` that closes them. ``context``'s cache is left as it
    was (its length is restored; the rows written past it are never read)."""
    cache, start = context.cache, context.cache.length
    if cache.capacity < start + max_tokens:
        raise ValueError(f"the context's cache holds {cache.capacity} rows, not {start} + {max_tokens}")
    token, out = ids.bos, []
    try:
        for step in range(max_tokens):
            out.append(token)
            hidden = model.embed_text(torch.tensor([token], device=device))
            position = torch.tensor([context.next_rope + step], device=device)
            last = model.decode(hidden, Routing.all_und(1), position, PrefillAttention(cache, start + step, None))
            cache.length = start + step + 1
            token = int(model.language_model.lm_head(last[-1]).argmax())  # the first of equal maxima, as argmax
            if token == ids.eos:
                break
    finally:
        cache.length = start
    return out[1:]


def with_plan(plans: GuidancePlans, plan_ids: list[int], ids: TokenIds) -> GuidancePlans:
    """``plans`` with the plan ``[<|im_start|>, *plan_ids, <|im_end|>]`` at the end of the full context only: a
    guidance context that was the full one stays the context without the plan."""
    full = plans.full
    tokens = (ids.bos, *plan_ids, ids.eos)
    part = max((b.part for b in full.blocks), default=-1) + 1
    block = Block("text", len(tokens), full.next_rope, part, tokens, plan=True)
    return dataclasses.replace(plans, full=ContextPlan((*full.blocks, block), block.rope_after))


PLAN_SHOWN = 200  # characters of a plan a front end shows (a model never trained to plan may write 1000 tokens)


def shown_plan(plan: str) -> str:
    """A plan as the CLI and the page show it: cut to :data:`PLAN_SHOWN` characters (the record keeps it whole)."""
    return plan if len(plan) <= PLAN_SHOWN else plan[:PLAN_SHOWN] + "…"


def thinks(think: bool | None, arch: ArchConfig) -> bool:
    """Whether a generation writes its plan first: as asked (``--think``/``--no-think``), else when the model was
    trained to (its ``plans`` skill)."""
    return think if think is not None else "plans" in (arch.skills or ())


def think(pipe, plans: GuidancePlans, inputs: BlockInputs, group_mask: bool, query_tokens: int, asked: bool | None):
    """Think mode when asked (or, ``asked`` None, for a model with the ``plans`` skill): prefill the full context
    with room for a plan, write the plan and append it. Returns ``(plans, the plan's text)``, or ``(plans, None)``
    untouched without think mode. The plan is cut where the context would overflow (the query keeps its
    ``query_tokens``)."""
    arch, ids = pipe.arch, pipe.tokenizer.ids
    if not thinks(asked, arch):
        return plans, None
    room = min(MAX_PLAN_TOKENS, arch.max_context_tokens - plans.full.length - query_tokens - 1)
    if room < 2:  # no room for even an empty plan: draw without one (check_context said the rest fits)
        return plans, ""
    full = prefill(pipe.model, plans.full, inputs, ids, device=pipe.device, query_tokens=room,
                   group_mask=group_mask, scope=arch.group_mask_scope)  # fmt: skip
    plan_ids = write_plan(pipe.model, full, ids, pipe.device, room)
    return with_plan(plans, plan_ids, ids), pipe.tokenizer.decode(plan_ids).strip()
