"""The group mask's three arms (the Table 4 ablation, issue 21 item 5) through the network: inference's prefill,
training's packed mask and the model directory that stores the arm. The masks themselves are checked against a
dense reference in tests/test_masks.py."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from sigma_studio.model import load_pipeline
from sigma_studio.model.config import MASK_ARMS
from sigma_studio.model.errors import CheckpointError
from sigma_studio.model.run.engine import prefill
from sigma_studio.model.run.masks import plan_mask
from sigma_studio.model.weights.arch_config import read_arch_config
from sigma_studio.model.weights.loader import save_pipeline
from tests.conftest import assert_cache_is_one_packed_forward, generate_keeping_contexts

PROMPT = "Place <id>the man <img1> next to <subject>the dog <img2> in a park"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def refs():
    return [Image.new("RGB", (64, 48), (200, 40, 40)), Image.new("RGB", (48, 64), (40, 40, 200))]


@pytest.fixture(scope="module")
def intent_pipe():
    return load_pipeline("tiny", seed=0, group_mask=True, group_mask_scope="intent")


def _cache(pipe, refs, layout, **mask):
    res = generate_keeping_contexts(pipe, PROMPT, refs, steps=2, seed=0, layout=layout)
    inputs = pipe.encode_references(res.plans, [pipe.prepare_image(r, layout) for r in refs],
                                    torch.Generator().manual_seed(0))  # fmt: skip
    return res, inputs


@pytest.mark.parametrize("layout", ["released", "trained"])
def test_intent_prefill_equals_one_packed_forward_of_its_mask(intent_pipe, refs, layout):
    """Under Fig. 2's intent an attribute token reads its own image, which comes after it: the prefill takes every
    row in one forward, and its caches are those of one packed forward under the plan's intent mask."""
    pipe = intent_pipe
    res, inputs = _cache(pipe, refs, layout)
    model, ids = pipe.model, pipe.tokenizer.ids
    for name in ("full", "text", "image"):
        ctx = res.contexts[name]
        intent = plan_mask(ctx.plan, group_mask=True, scope="intent")
        assert_cache_is_one_packed_forward(model, ctx, inputs, ids, intent)
        # a chunked prefill cannot look ahead, so the engine ignores chunked under this scope
        chunked = prefill(model, ctx.plan, inputs, ids, device=CPU, query_tokens=22, group_mask=True, scope="intent",
                          chunked=True)  # fmt: skip
        torch.testing.assert_close(chunked.cache.rows(0)[0], ctx.cache.rows(0)[0], atol=1e-5, rtol=1e-5)


def test_each_arm_draws_another_picture(refs):
    """Same weights, same seed: the three arms give three different pictures (each mask reaches the network)."""
    latents = {}
    for arm, (on, scope) in MASK_ARMS.items():
        pipe = load_pipeline("tiny", seed=0, group_mask=on, group_mask_scope=scope)
        latents[arm] = pipe(PROMPT, refs, steps=2, seed=0).latents
    assert not torch.equal(latents["off"], latents["eq9"])
    assert not torch.equal(latents["eq9"], latents["intent"])
    assert not torch.equal(latents["off"], latents["intent"])


def test_training_and_inference_build_the_same_intent_mask(intent_pipe):
    from sigma_studio.finetune.packing import pack
    from tests.test_finetune import _samples

    arch, (a, _) = _samples(intent_pipe)
    mask = pack([a], arch, intent_pipe.tokenizer.ids, True, "intent").attention_mask
    n = a.plan.length
    assert torch.equal(mask[:n, :n], plan_mask(a.plan, group_mask=True, scope="intent"))
    assert not torch.equal(mask[:n, :n], plan_mask(a.plan, group_mask=True, scope="eq9"))


def test_the_arm_is_stored_with_the_model(intent_pipe, tmp_path):
    folder = save_pipeline(intent_pipe, tmp_path / "m")
    arch = read_arch_config(folder)
    assert (arch.group_mask, arch.group_mask_scope) == MASK_ARMS["intent"]
    assert load_pipeline(folder).arch.group_mask_scope == "intent"
    config = json.loads((folder / "sigma_config.json").read_text())
    config["arch"]["group_mask_scope"] = "sideways"
    (folder / "sigma_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="sideways"):
        read_arch_config(folder)


def test_a_finetune_option_names_the_scope(tmp_path):
    from sigma_studio.finetune.config import TrainConfig
    from sigma_studio.model.errors import InputError

    with pytest.raises(InputError, match="--group-mask-scope sideways"):
        TrainConfig(out=str(tmp_path), dataset=str(tmp_path), group_mask_scope="sideways")


def test_a_loader_override_names_the_scope():
    from sigma_studio.model.errors import InputError

    with pytest.raises(InputError, match="group_mask_scope='sideways'"):
        load_pipeline("tiny", group_mask_scope="sideways")
