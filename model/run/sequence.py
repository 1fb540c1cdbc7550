"""PURE sequence building: prompt parts + token ids + image grids -> the token layout of each CFG context.

Two layouts, both first-class:

``released``
    Exactly what the released inferencer builds from an input list. Text segment = ``[bos] ids [eos]``, causal,
    one RoPE step per token. Image = VAE block ``[soi] latents [eoi]`` at ONE RoPE position (then a ViT block at
    the next position when the model has a ViT), full attention. Guidance contexts: *text-dropped* is the full
    context as it stood before the last text (identical to it when an image comes last), *image-dropped* is the
    text segments alone with contiguous positions.

``trained``
    The layout SIGMA's training data used: every reference is a VAE block at position r plus a ViT slot at r+1
    (zero vectors without a ViT: it carries the reference's token count only), so each reference advances RoPE
    by 2. Guidance contexts follow what condition dropout taught the model: *text-dropped* removes every text
    segment without advancing RoPE (text dropout), *image-dropped* removes every reference block but advances
    RoPE by one per removed block (VAE and ViT dropout). A training sample also has its noised target block.

Nothing here touches a model, a tokenizer object or an RNG.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..request.prompt import ImagePart, Part, TextPart
from ..request.tokens import ATTRIBUTE_TOKENS, TokenIds

BlockKind = Literal["text", "vae", "vit", "noise"]
ATTN_MODE = {"text": "causal", "vae": "full", "vit": "full", "noise": "noise"}


@dataclass(frozen=True)
class ImageGeometry:
    """Token grids of one given image: latent (h, w) and ViT (h, w) patches (``None``: no ViT block)."""

    latent_hw: tuple[int, int]
    vit_hw: tuple[int, int] | None = None


@dataclass(frozen=True)
class Block:
    """One contiguous run of tokens (a split): a text segment or a marker-wrapped image block."""

    kind: BlockKind
    length: int
    rope: int  # first RoPE position (text) or the one shared position (image blocks)
    part: int  # index of the prompt part this block comes from
    token_ids: tuple[int, ...] = ()
    image: int = -1  # index of the given image
    grid: tuple[int, int] = (0, 0)
    group: int = -1  # image placement id (image blocks)
    tag_group: int = -1  # text: the placement that this segment's attribute tokens are bound to
    tag_offsets: tuple[int, ...] = ()  # text: offsets in the block of those attribute tokens (eq. 9 scope)
    zero_input: bool = False  # a ViT slot with no ViT: its tokens enter as zero vectors
    attributes: tuple[int, ...] = ()  # image blocks: attribute indices 0..14 of the placement
    plan: bool = False  # text: the model's written plan (think mode), always trained with cross-entropy

    @property
    def attn_mode(self) -> str:
        return ATTN_MODE[self.kind]

    @property
    def rope_after(self) -> int:
        return self.rope + self.length if self.kind == "text" else self.rope + 1

    def positions(self) -> list[int]:
        if self.kind == "text":
            return list(range(self.rope, self.rope + self.length))
        return [self.rope] * self.length


@dataclass(frozen=True)
class ContextPlan:
    blocks: tuple[Block, ...] = ()
    next_rope: int = 0

    @property
    def length(self) -> int:
        return sum(b.length for b in self.blocks)

    def offsets(self) -> list[int]:
        out, pos = [], 0
        for b in self.blocks:
            out.append(pos)
            pos += b.length
        return out

    def is_prefix_of(self, other: ContextPlan) -> bool:
        return self.blocks == other.blocks[: len(self.blocks)]


@dataclass(frozen=True)
class GuidancePlans:
    """The three contexts of classifier-free guidance; identical contexts are the same object."""

    full: ContextPlan
    text_dropped: ContextPlan
    image_dropped: ContextPlan
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class _Seg:
    """A part resolved to tokens: a text segment or an image placement."""

    part: int
    token_ids: tuple[int, ...] = ()
    image: int = -1
    group: int = -1
    tag_group: int = -1
    tag_offsets: tuple[int, ...] = ()
    attributes: tuple[int, ...] = ()
    plan: bool = False


def _resolve(parts: Sequence[Part], segment: Callable[[str], list[int]], ids: TokenIds) -> list[_Seg]:
    segs: list[_Seg] = []
    group = 0
    for i, part in enumerate(parts):
        if isinstance(part, TextPart):
            tok = tuple(segment(part.text))
            nxt = parts[i + 1] if i + 1 < len(parts) else None
            tag_group, tag_offsets = -1, ()
            if isinstance(nxt, ImagePart) and nxt.attributes:
                tag_offsets = tuple(j for j, t in enumerate(tok) if ids.attribute_index(t) is not None)
                tag_group = group if tag_offsets else -1
            segs.append(_Seg(i, token_ids=tok, tag_group=tag_group, tag_offsets=tag_offsets, plan=part.plan))
        else:
            attrs = tuple(sorted({a for t in part.attributes if (a := _attr_index(t)) is not None}))
            segs.append(_Seg(i, image=part.index, group=group, attributes=attrs))
            group += 1
    return segs


def _attr_index(token: str) -> int | None:
    return ATTRIBUTE_TOKENS.index(token) if token in ATTRIBUTE_TOKENS else None


def _text_block(seg: _Seg, rope: int) -> Block:
    return Block(
        "text",
        len(seg.token_ids),
        rope,
        seg.part,
        seg.token_ids,
        tag_group=seg.tag_group,
        tag_offsets=seg.tag_offsets,
        plan=seg.plan,
    )


def _image_block(kind: BlockKind, seg: _Seg, grid: tuple[int, int], rope: int, zero: bool = False) -> Block:
    return Block(
        kind,
        grid[0] * grid[1] + 2,
        rope,
        seg.part,
        image=seg.image,
        grid=grid,
        group=seg.group,
        zero_input=zero,
        attributes=seg.attributes,
    )


def released_plans(
    parts: Sequence[Part],
    geometry: Sequence[ImageGeometry],
    segment: Callable[[str], list[int]],
    ids: TokenIds,
) -> GuidancePlans:
    """The released inferencer's three contexts (a ViT block follows each VAE block when ``vit_hw`` is set)."""
    full: list[Block] = []
    rope = 0
    snapshot: tuple[tuple[Block, ...], int] = ((), 0)
    texts: list[Block] = []
    text_rope = 0
    for seg in _resolve(parts, segment, ids):
        if seg.image < 0:
            snapshot = (tuple(full), rope)
            block = _text_block(seg, rope)
            full.append(block)
            rope = block.rope_after
            texts.append(_text_block(seg, text_rope))
            text_rope += len(seg.token_ids)
        else:
            geo = geometry[seg.image]
            full.append(_image_block("vae", seg, geo.latent_hw, rope))
            rope += 1
            if geo.vit_hw is not None:
                full.append(_image_block("vit", seg, geo.vit_hw, rope))
                rope += 1
            snapshot = (tuple(full), rope)
    full_plan = ContextPlan(tuple(full), rope)
    text_plan = ContextPlan(*snapshot)
    image_plan = ContextPlan(tuple(texts), text_rope)
    return GuidancePlans(
        full_plan,
        full_plan if text_plan == full_plan else text_plan,
        full_plan if image_plan == full_plan else image_plan,
    )


def trained_blocks(
    parts: Sequence[Part],
    geometry: Sequence[ImageGeometry],
    segment: Callable[[str], list[int]],
    ids: TokenIds,
    *,
    drop_text: bool = False,
    drop_images: bool = False,
    target: int | None = None,
    slot_is_zero: bool = True,
    dropped: frozenset[tuple[int, str]] = frozenset(),
) -> ContextPlan:
    """SIGMA's training layout. ``target`` is the part index of the generation target (training only); every
    mention of the target image becomes a noise split, as in the released data code.

    ``dropped`` holds (part index, "text" | "vae" | "vit") items removed by condition dropout: a dropped text
    does not advance RoPE, a dropped VAE or ViT item advances it by one (released packing rules).
    """
    blocks: list[Block] = []
    rope = 0
    for seg in _resolve(parts, segment, ids):
        if seg.image < 0:
            if not (drop_text or (seg.part, "text") in dropped):
                block = _text_block(seg, rope)
                blocks.append(block)
                rope = block.rope_after
            continue
        geo = geometry[seg.image]
        if target is not None and seg.image == parts[target].index:
            blocks.append(_image_block("noise", seg, geo.latent_hw, rope))
            continue  # RoPE does not advance after the target (each mention of it is a target split)
        if not (drop_images or (seg.part, "vae") in dropped):
            blocks.append(_image_block("vae", seg, geo.latent_hw, rope))
        if geo.vit_hw is not None and not (drop_images or (seg.part, "vit") in dropped):
            blocks.append(_image_block("vit", seg, geo.vit_hw, rope + 1, zero=slot_is_zero))
        rope += 2 if geo.vit_hw is not None else 1
    return ContextPlan(tuple(blocks), rope)


def trained_plans(
    parts: Sequence[Part],
    geometry: Sequence[ImageGeometry],
    segment: Callable[[str], list[int]],
    ids: TokenIds,
    slot_is_zero: bool = True,
) -> GuidancePlans:
    def build(**kw) -> ContextPlan:
        return trained_blocks(parts, geometry, segment, ids, slot_is_zero=slot_is_zero, **kw)

    full = build()
    text_plan, image_plan = build(drop_text=True), build(drop_images=True)
    return GuidancePlans(
        full,
        full if text_plan == full else text_plan,
        full if image_plan == full else image_plan,
    )
