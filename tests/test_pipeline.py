"""End-to-end generation on the tiny model, and the engine's invariants (prefill, batching, reuse)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sigma_studio.model import GenerationConfig, InputError, PromptError, load_pipeline
from sigma_studio.model.run.engine import query_velocity
from sigma_studio.model.run.masks import plan_mask
from tests.conftest import assert_cache_is_one_packed_forward, generate_keeping_contexts

PROMPT = "Place <id>the man <img1> next to <subject>the dog <img2> in a park"


def _image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def refs():
    return [_image(70, 90, 1), _image(80, 60, 2)]


@pytest.mark.parametrize("layout", ["released", "trained"])
def test_generation_with_group_mask(tiny_pipe, refs, layout):
    steps = []
    cfg = GenerationConfig(steps=4, seed=5, layout=layout, group_mask=True)
    res = tiny_pipe(PROMPT, refs, config=cfg, progress=lambda i, n: steps.append((i, n)))
    assert res.image.size == (80, 64) and res.image.mode == "RGB"  # the last reference's VAE size
    assert res.size == (64, 80) and res.seed == 5 and res.layout == layout
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]  # the steps asked for; the last after decoding
    again = tiny_pipe(PROMPT, refs, config=cfg)
    assert torch.equal(again.latents, res.latents)
    unmasked = tiny_pipe(PROMPT, refs, config=cfg.replace(group_mask=False))
    assert not torch.allclose(unmasked.latents, res.latents)


def test_text_to_image_and_explicit_size(tiny_pipe):
    res = tiny_pipe("a red apple on a table", steps=3, seed=1, size=(32, 48))
    assert res.image.size == (48, 32)
    assert tiny_pipe("a red apple", steps=2, seed=1).size == (128, 128)


def test_images_by_name(tiny_pipe, refs):
    a = tiny_pipe("x <img2> y <img1>", {"img1": refs[0], "image_2": refs[1]}, steps=2, seed=3)
    b = tiny_pipe("x <img1> y <img2>", [refs[1], refs[0]], steps=2, seed=3)
    assert torch.equal(a.latents, b.latents)


@pytest.mark.parametrize("group_mask", [False, True])
@pytest.mark.parametrize("layout", ["released", "trained"])
def test_chunked_prefill_equals_one_packed_forward(tiny_pipe, refs, layout, group_mask):
    res = generate_keeping_contexts(tiny_pipe, PROMPT, refs, steps=2, seed=0, layout=layout, group_mask=group_mask)
    ctx = res.contexts["full"]
    model, ids = tiny_pipe.model, tiny_pipe.tokenizer.ids
    inputs = tiny_pipe.encode_references(
        res.plans, [tiny_pipe.prepare_image(r, layout) for r in refs], torch.Generator().manual_seed(0)
    )
    assert_cache_is_one_packed_forward(model, ctx, inputs, ids, plan_mask(ctx.plan, group_mask=group_mask))


def test_batched_branches_equal_separate_forwards(tiny_pipe, refs):
    res = generate_keeping_contexts(tiny_pipe, PROMPT, refs, steps=2, seed=0, layout="trained")
    ctxs = [res.contexts[k] for k in ("full", "text", "image")]
    x = torch.randn(20, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(0.7)
    cpu = torch.device("cpu")
    batched = query_velocity(tiny_pipe.model, ctxs, x, t, (4, 5), tiny_pipe.tokenizer.ids, cpu)
    for ctx, v in zip(ctxs, batched, strict=True):
        alone = query_velocity(tiny_pipe.model, [ctx], x, t, (4, 5), tiny_pipe.tokenizer.ids, cpu)[0]
        torch.testing.assert_close(v, alone, atol=1e-5, rtol=1e-5)


def test_released_text_dropped_context_reuses_the_prefix(tiny_pipe, refs):
    res = generate_keeping_contexts(tiny_pipe, PROMPT, refs, steps=2, seed=0, layout="released")
    full, text = res.contexts["full"], res.contexts["text"]
    assert text is not full and text.plan.is_prefix_of(full.plan)
    k_full, _ = full.cache.rows(1)
    k_text, _ = text.cache.rows(1)
    assert torch.equal(k_text, k_full[: text.cache.length])


def test_attribute_projection_is_a_zero_initialised_no_op():
    plain = load_pipeline("tiny", seed=0)
    proj = load_pipeline("tiny", seed=0, attribute_projection=True)
    proj.model.load_state_dict(plain.model.state_dict(), strict=False)
    assert proj.model.attribute_embed.weight.abs().sum() == 0
    img = [_image(64, 64, 3)]
    a = plain("a <style>look <img1>", img, steps=2, seed=2).latents
    b = proj("a <style>look <img1>", img, steps=2, seed=2).latents
    torch.testing.assert_close(a, b)
    with torch.no_grad():
        proj.model.attribute_embed.weight[0] = 1.0  # the <style> vector
    c = proj("a <style>look <img1>", img, steps=2, seed=2).latents
    d = proj("a <id>look <img1>", img, steps=2, seed=2).latents
    assert not torch.allclose(a, c)
    assert (
        "attribute_embed.weight" in proj.model.state_dict() and "attribute_embed.weight" not in plain.model.state_dict()
    )
    assert d.shape == c.shape


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"size": (60, 64)}, InputError, "not a multiple of 16"),
        ({"size": (256, 64)}, InputError, "over this model's limit of 128"),
        ({"latents": torch.zeros(3, 16)}, InputError, "latents must have shape"),
    ],
)
def test_bad_settings(tiny_pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny_pipe("a cat", steps=2, seed=0, **kwargs)


def test_bad_prompts(tiny_pipe, refs):
    with pytest.raises(PromptError, match="<img3> names an image that was not given"):
        tiny_pipe("a <img3>", refs, steps=2)
    with pytest.raises(InputError, match="either a prompt"):
        tiny_pipe("a", refs, inputs=["b"], steps=2)
    with pytest.raises(InputError, match="expected an image or a file path"):
        tiny_pipe("a <img1>", [42], steps=2)


def test_context_limit():
    small = load_pipeline("tiny", max_context_tokens=40)
    with pytest.raises(InputError, match="needs .* tokens .* holds 40"):
        small("a cat " * 10, steps=2, size=(64, 64))


@pytest.mark.parametrize("layout", ["released", "trained"])
def test_span_prefill_equals_the_chunked_reference(tiny_pipe, refs, layout):
    """Several blocks per forward fill the same caches as one block per forward (the released code's way)."""
    from sigma_studio.model.run.engine import prefill

    res = generate_keeping_contexts(tiny_pipe, PROMPT, refs, steps=2, seed=0, layout=layout, group_mask=True)
    inputs = tiny_pipe.encode_references(
        res.plans, [tiny_pipe.prepare_image(r, layout) for r in refs], torch.Generator().manual_seed(0)
    )
    for name in ("full", "text", "image"):
        span = res.contexts[name]
        chunked = prefill(tiny_pipe.model, span.plan, inputs, tiny_pipe.tokenizer.ids, device=torch.device("cpu"),
                          query_tokens=22, group_mask=True, chunked=True)  # fmt: skip
        for layer in range(tiny_pipe.arch.llm.num_layers):
            for a, b in zip(span.cache.rows(layer), chunked.cache.rows(layer), strict=True):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
