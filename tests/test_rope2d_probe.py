"""examples/shapes_rope2d.py: image tokens with rotary positions in rows and columns, the same in the training layout
and at inference, and plain RoPE for text."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sigma_studio.finetune.data import DropConfig, build_sample
from sigma_studio.model import GenerationConfig, load_pipeline
from sigma_studio.model.arch.layers import RotaryEmbedding
from sigma_studio.model.data.dataset import SigmaRow
from sigma_studio.model.run.masks import plan_mask
from sigma_studio.model.run.sequence import Block
from sigma_studio.model.shapes.world import Thing, render
from tests.conftest import assert_cache_is_one_packed_forward, generate_keeping_contexts

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "shapes_rope2d.py"
sys.path.insert(0, str(SCRIPT.parent))
import shapes_rope2d  # noqa: E402

FEW = GenerationConfig(steps=4)


def png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


PROMPT = "Draw only <select>the star <image_1>."


@pytest.fixture(scope="module")
def shapes():
    return load_pipeline("shapes")


@pytest.fixture
def scene():
    return render([Thing("star", "red", (4.0, 6.0, 20.0, 20.0)), Thing("circle", "blue", (36.0, 30.0, 20.0, 20.0))])


def test_text_rotates_as_plain_rope():
    rope = RotaryEmbedding(32, 1e6)
    pos = torch.arange(7)
    plain = rope(pos, torch.float32)
    for ids in (pos, pos[:, None].expand(-1, 3)):
        ours = shapes_rope2d.rotary(rope, ids, torch.float32)
        assert all(torch.equal(a, b) for a, b in zip(ours, plain, strict=True))


def test_an_image_block_gets_rows_and_columns_and_its_markers_its_position():
    block = Block("noise", 2 * 3 + 2, 9, 0, grid=(2, 3))
    got = shapes_rope2d.block_positions(block)
    s = shapes_rope2d.SCALE
    assert got[0] == got[-1] == (9, 9, 9)
    assert got[1:-1] == [(9, 9 + s * r, 9 + s * c) for r in range(2) for c in range(3)]
    assert shapes_rope2d.block_positions(Block("text", 3, 4, 0)) == [(4, 4, 4), (5, 5, 5), (6, 6, 6)]


def test_inference_and_the_training_layout_agree(shapes, scene, monkeypatch):
    shapes_rope2d.patch(monkeypatch.setattr)
    res = generate_keeping_contexts(shapes, PROMPT, [scene], config=FEW, seed=0)
    ctx = res.contexts["full"]
    inputs = shapes.encode_references(
        res.plans, [shapes.prepare_image(scene, res.layout)], torch.Generator().manual_seed(0)
    )
    mask = plan_mask(ctx.plan, group_mask=shapes.arch.group_mask, scope=shapes.arch.group_mask_scope)
    # the KV cache the patched prefill leaves is one packed forward (the training forward's way) of the same plan
    assert_cache_is_one_packed_forward(shapes.model, ctx, inputs, shapes.tokenizer.ids, mask)
    grid = (8, 8)
    target = render([Thing("star", "red", (16.0, 16.0, 32.0, 32.0))])
    row = SigmaRow("select-0", PROMPT, tuple(png(img) for img in (scene, target)))
    sample = build_sample(row, shapes.arch, shapes.tokenizer, torch.Generator().manual_seed(0), DropConfig(0, 0, 0))
    noise = next(b for b in sample.plan.blocks if b.kind == "noise")  # the target block of the training layout
    assert noise.rope == ctx.next_rope and noise.grid == grid
    rows = shapes_rope2d.query_positions([ctx], grid, torch.device("cpu"))
    assert rows[:64].tolist() == [list(p) for p in shapes_rope2d.block_positions(noise)[1:-1]]
    assert rows[64:].tolist() == [[ctx.next_rope] * 3] * 2


def test_the_patch_changes_the_drawing_and_is_undone(shapes, scene, monkeypatch):
    plain = np.asarray(shapes(PROMPT, [scene], config=FEW, seed=0).image)
    with monkeypatch.context() as m:
        shapes_rope2d.patch(m.setattr)
        patched = [np.asarray(shapes(PROMPT, [scene], config=FEW, seed=0).image) for _ in range(2)]
    assert np.array_equal(*patched) and not np.array_equal(plain, patched[0])
    assert np.array_equal(plain, np.asarray(shapes(PROMPT, [scene], config=FEW, seed=0).image))
