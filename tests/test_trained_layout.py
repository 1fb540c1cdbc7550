"""The ``trained`` layout against the fixture's ``sigma_train_layout`` case (the released SIGMA packer's output).

Our pure pieces (training-instruction parser, resize rule, :func:`model.run.sequence.trained_blocks`, the mask
builder) must reproduce the recorded layout exactly: split lengths, attention modes, token ids, RoPE positions,
latent grids, the ViT slot sizes, and the dense attention mask.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sigma_studio.model.images import grid_position_ids, resize_size, to_rgb
from sigma_studio.model.request.prompt import parse_training_instruction
from sigma_studio.model.request.tokens import Tokenizer
from sigma_studio.model.run.masks import plan_mask
from sigma_studio.model.run.sequence import ImageGeometry, trained_blocks
from tests.conftest import fixture_cases, fixture_dir, resize_spec

pq = pytest.importorskip("pyarrow.parquet")
CASES = fixture_cases("sigma_train_layout")
KIND = {"text": "text", "vae_image_cond": "vae", "vit_slot_placeholder": "vit", "target_noise": "noise"}


@pytest.fixture(scope="module", params=CASES, ids=[c.name for c in CASES])
def built(request):
    case_dir = request.param
    case = json.loads((case_dir / "case.json").read_text())
    layout = json.loads((case_dir / "layout.json").read_text())
    table = pq.read_table(case_dir / case["parquet"]["file"]).to_pylist()[0]
    instruction = table["instruction_list"][0][0]
    images = [to_rgb(Image.open(io.BytesIO(b))) for b in table["image_list"]]
    tr = case["transforms"]
    vae_spec, vit_spec = resize_spec(tr["image_transform_args"]), resize_spec(tr["vit_image_transform_args"])
    geometry = []
    for img in images:
        vw, vh = resize_size(img.width, img.height, vae_spec)
        tw, th = resize_size(img.width, img.height, vit_spec)
        geometry.append(ImageGeometry((vh // 16, vw // 16), (th // vit_spec.stride, tw // vit_spec.stride)))
    tok = Tokenizer.from_dir(fixture_dir() / "model")
    parsed = parse_training_instruction(instruction, len(images))
    plan = trained_blocks(parsed.parts, geometry, tok.segment, tok.ids, target=parsed.target_index)
    return case_dir, case, layout, images, plan


def test_splits(built):
    _, case, layout, _, plan = built
    assert [b.length for b in plan.blocks] == case["split_lens"]
    assert [b.attn_mode for b in plan.blocks] == case["attn_modes"]
    assert plan.length == layout["sequence_length"]
    offsets = plan.offsets()
    for block, start, split in zip(plan.blocks, offsets, layout["splits"], strict=True):
        assert block.kind == KIND[split["kind"]]
        assert (start, start + block.length) == (split["token_start"], split["token_end"])
        if split["kind"] == "text":
            assert list(block.token_ids) == split["token_ids"]
            assert block.positions() == split["rope_positions"]
        else:
            assert block.positions() == [split["rope_position"]] * block.length
        if "latent_hw" in split:
            assert list(block.grid) == split["latent_hw"]
            grid_width = case["data_config"]["max_latent_size"]
            assert grid_position_ids(*block.grid, grid_width).tolist() == split["latent_position_ids"]
        if "vit_grid" in split:
            assert list(block.grid) == split["vit_grid"]
            assert block.zero_input


def test_rope_positions(built):
    case_dir, _, layout, _, plan = built
    packed = load_file(str(case_dir / "packed_inputs.safetensors"))
    positions = [p for b in plan.blocks for p in b.positions()]
    assert positions == packed["packed_position_ids"].tolist()
    assert max(positions) + 1 == layout["rope_positions_used"]


def test_mask(built):
    case_dir, _, _, _, plan = built
    packed = load_file(str(case_dir / "packed_inputs.safetensors"))
    reference = packed["nested_attention_mask_0"] == 0
    assert torch.equal(plan_mask(plan), reference)


def test_row_images_decode_identically(built):
    case_dir, _, _, images, _ = built
    exp = load_file(str(case_dir / "expected.safetensors"))
    for k, img in enumerate(images):
        np.testing.assert_array_equal(np.asarray(img), exp[f"row_image_rgb_{k}"].numpy())
