"""The mask builder against a plain dense implementation of SIGMA's eqs. 6-9, on random layouts (hypothesis)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sigma_studio.model.config import MASK_ARMS
from sigma_studio.model.request.prompt import ImagePart, TextPart
from sigma_studio.model.request.tokens import ATTRIBUTE_TOKENS, TokenIds
from sigma_studio.model.run.masks import (
    TokenTable,
    allowed,
    block_rows_mask,
    looks_ahead,
    plan_mask,
    to_additive,
    token_table,
)
from sigma_studio.model.run.sequence import ContextPlan, ImageGeometry, released_plans, trained_blocks

IDS = TokenIds(bos=1, eos=2, start_of_image=3, end_of_image=4, attributes=tuple(range(100, 115)))


def fake_segment(text: str) -> list[int]:
    """Deterministic fake tokenizer: attribute tokens are single ids, other words one id each."""
    out = [IDS.bos]
    for word in text.replace(">", "> ").split():
        out.append(100 + ATTRIBUTE_TOKENS.index(word) if word in ATTRIBUTE_TOKENS else 10 + len(word))
    return out + [IDS.eos]


def reference_mask(plan: ContextPlan, group_mask: bool, scope: str = "eq9") -> torch.Tensor:
    """Eqs. 6-9 written out token by token (and Fig. 2's intent with ``scope="intent"``).

    (6) causal: key j visible to query i if j <= i.
    (7) image blocks (and the noised target) are bidirectional inside themselves.
    (8) the noised target is invisible outside its own block.
    (9) group scope: an attribute token bound to placement g cannot see image blocks of placement g' != g.
    (Fig. 2, "intent") moreover, an attribute token bound to g sees g's image blocks, even though they come later.

    The binding is read off the token ids themselves: an attribute id in the text segment that comes right before
    an image placement (in the prompt) belongs to that placement's group.
    """
    toks = []
    for bi, b in enumerate(plan.blocks):
        for j in range(b.length):
            is_attr = b.kind == "text" and b.token_ids[j] in IDS.attributes
            tag = b.tag_group if is_attr else -1
            toks.append((bi, b.attn_mode, b.group if b.kind != "text" else -1, tag))
    n = len(toks)
    out = torch.zeros(n, n, dtype=torch.bool)
    for i, (bi, mi, _gi, ti) in enumerate(toks):
        for j, (bj, mj, gj, _tj) in enumerate(toks):
            ok = j <= i or (bi == bj and mi in ("full", "noise"))
            if group_mask and scope == "intent" and ti >= 0 and gj == ti:
                ok = True
            if mj == "noise" and bi != bj:
                ok = False
            if group_mask and ti >= 0 and gj >= 0 and ti != gj:
                ok = False
            out[i, j] = ok
    return out


words = st.sampled_from(["a", "man", "dog", "park", "the", "very", "red"])
attrs = st.lists(st.sampled_from(ATTRIBUTE_TOKENS), max_size=2)


@st.composite
def layouts(draw):
    n_images = draw(st.integers(0, 3))
    parts = []
    for _ in range(draw(st.integers(1, 6))):
        if n_images and draw(st.booleans()):
            parts.append(ImagePart(draw(st.integers(0, n_images - 1))))
        else:
            tags = draw(attrs)
            text = " ".join(draw(st.lists(words, min_size=0, max_size=3)) + tags + draw(st.lists(words, max_size=2)))
            parts.append(TextPart(text or "a"))
    bound = []
    for i, p in enumerate(parts):  # bind attributes like the parser does
        if isinstance(p, ImagePart) and i and isinstance(parts[i - 1], TextPart):
            p = ImagePart(p.index, tuple(t for t in ATTRIBUTE_TOKENS if t in parts[i - 1].text.split()))
        bound.append(p)
    geometry = [
        ImageGeometry(
            (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
            (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if draw(st.booleans()) else None,
        )
        for _ in range(n_images)
    ]
    return bound, geometry


@settings(max_examples=150, deadline=None)
@given(layouts(), st.sampled_from(list(MASK_ARMS)), st.sampled_from(["released", "trained", "trained_target"]))
def test_mask_matches_dense_reference(layout, arm, kind):
    group_mask, scope = MASK_ARMS[arm]
    parts, geometry = layout
    if kind == "released":
        plan = released_plans(parts, geometry, fake_segment, IDS).full
    else:
        geometry = [g if g.vit_hw else ImageGeometry(g.latent_hw, (1, 1)) for g in geometry]
        target = None
        if kind == "trained_target" and any(isinstance(p, ImagePart) for p in parts):
            target = max(i for i, p in enumerate(parts) if isinstance(p, ImagePart))
        plan = trained_blocks(parts, geometry, fake_segment, IDS, target=target)
    if not plan.blocks:
        return
    want = reference_mask(plan, group_mask, scope)
    assert torch.equal(plan_mask(plan, group_mask=group_mask, scope=scope), want)
    if looks_ahead(group_mask, scope):  # its prefill is one forward of every row (tests/test_mask_arms.py)
        return
    table = token_table(plan)
    for start, block in zip(plan.offsets(), plan.blocks, strict=True):
        rows = block_rows_mask(table, start, start + block.length, group_mask=group_mask)
        expect = want[start : start + block.length, : start + block.length]
        assert torch.equal(rows if rows is not None else torch.ones_like(expect), expect)


def two_groups_plan():
    """The released layout of "Place <id> man <img1> next to <subject> dog <img2> in a park": two groups."""
    parts = [
        TextPart("Place <id> man"),
        ImagePart(0, ("<id>",)),
        TextPart("next to <subject> dog"),
        ImagePart(1, ("<subject>",)),
        TextPart("in a park"),
    ]
    return released_plans(parts, [ImageGeometry((1, 2)), ImageGeometry((2, 1))], fake_segment, IDS).full


def test_group_mask_blocks_other_groups_only():
    plan = two_groups_plan()
    on, off = plan_mask(plan, group_mask=True), plan_mask(plan, group_mask=False)
    starts = plan.offsets()
    text2, img1 = plan.blocks[2], plan.blocks[1]
    (subject_offset,) = text2.tag_offsets
    subject_row = starts[2] + subject_offset  # the <subject> token
    assert text2.token_ids[subject_offset] == IDS.attributes[ATTRIBUTE_TOKENS.index("<subject>")]
    img1_cols = slice(starts[1], starts[1] + img1.length)
    assert off[subject_row, img1_cols].all() and not on[subject_row, img1_cols].any()
    assert on[starts[2] + 1, img1_cols].all()  # "next" is no attribute token: unrestricted
    assert on[subject_row + 1, img1_cols].all()  # nor is "dog", after the attribute token (eq. 9 scopes the token)
    assert on[starts[4] :, :].equal(off[starts[4] :, :])  # untagged text stays causal
    img2 = slice(starts[3], starts[3] + plan.blocks[3].length)
    assert on[img2, img2].all()  # patches of one image see each other


def test_packing_isolates_samples():
    a = ContextPlan(released_plans([TextPart("a b")], [], fake_segment, IDS).full.blocks, 4)
    tables = [token_table(a, sample=0), token_table(a, sample=1, block_offset=1)]
    packed = TokenTable.concat(tables)
    m = allowed(packed, packed)
    n = len(tables[0])
    assert not m[n:, :n].any() and not m[:n, n:].any()


def test_additive_form():
    m = torch.tensor([[True, False], [True, True]])
    add = to_additive(m)
    assert add[0, 1] == float("-inf") and add[0, 0] == 0 and add[1].eq(0).all()


def test_without_attribute_tokens_the_group_mask_changes_nothing():
    """The Table 4 ablation's two token-free runs are one run: eq. 9 scopes attribute tokens and nothing else."""
    parts = [
        TextPart("Draw the this shape"),
        ImagePart(0),
        TextPart("in the this colour of"),
        ImagePart(1),
        TextPart("."),
    ]
    geometry = [ImageGeometry((2, 2), (1, 1)), ImageGeometry((2, 2), (1, 1))]
    plan = trained_blocks(parts, geometry, fake_segment, IDS)
    assert torch.equal(plan_mask(plan, group_mask=True), plan_mask(plan, group_mask=False))
    assert torch.equal(plan_mask(plan, group_mask=True, scope="intent"), plan_mask(plan, group_mask=False))


def test_the_three_arms_differ_only_in_what_an_attribute_token_sees():
    """off: the <subject> token sees the earlier image and not its own (causal); eq. 9: neither; Fig. 2's intent:
    its own image (both ways) and not the other group's."""
    plan = two_groups_plan()
    masks = {arm: plan_mask(plan, group_mask=on, scope=scope) for arm, (on, scope) in MASK_ARMS.items()}
    starts = plan.offsets()
    row = starts[2] + plan.blocks[2].tag_offsets[0]  # the <subject> token
    img1 = slice(starts[1], starts[1] + plan.blocks[1].length)
    img2 = slice(starts[3], starts[3] + plan.blocks[3].length)
    seen = {
        arm: (bool(m[row, img1].all()), bool(m[row, img2].all()), bool(m[row, img2].any())) for arm, m in masks.items()
    }
    assert seen == {"off": (True, False, False), "eq9": (False, False, False), "intent": (False, True, True)}
    for m in masks.values():
        assert m[img2, row].all()  # its own image's patches see the token (it comes before them) in every arm
    others = torch.ones_like(masks["off"])
    others[row] = False
    others[starts[0] + plan.blocks[0].tag_offsets[0]] = False  # the <id> token
    assert masks["intent"][others].equal(masks["off"][others])  # no other token's view changes
