"""Numerical parity with the released inference code on every ``interleave_inference`` case of a fixture.

The fixture directory comes from ``SIGMA_PARITY_FIXTURE`` (default ``tests/fixtures/bagel-tiny``, in the repository).
Its ``model/`` directory is loaded like a released checkpoint; the values the released code hard-codes in Python
(VAE scale/shift, image transforms) come from its ``fixture_config.json``. Tolerances are the fixture README's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sigma_studio.model import GenerationConfig
from tests.conftest import (
    fixture_cases,
    fixture_dir,
    fixture_pipeline,
    generate_keeping_contexts,
    requires_fixture,
    resize_spec,
)

CASES = fixture_cases("interleave_inference")
ATOL = RTOL = 1e-4
CONTEXT_NAMES = {"gen": "full", "cfg_text": "text", "cfg_img": "image"}


def _load(case: dict):
    fc = json.loads((fixture_dir() / "model" / "fixture_config.json").read_text())
    return fixture_pipeline(
        case["visual_und"],
        vae_transform=resize_spec(fc["vae_transform"]),
        vit_transform=resize_spec(fc["vit_transform"]),
    )


def _run(case_dir: Path):
    case = json.loads((case_dir / "case.json").read_text())
    pipe = _load(case)
    inputs = [x["text"] if x["type"] == "text" else case_dir / x["file"] for x in case["inputs"]]
    has_image = any(x["type"] == "image" for x in case["inputs"])
    s = case["sampler"]
    config = GenerationConfig(
        steps=s["num_timesteps"],
        cfg_text_scale=s["cfg_text_scale"],
        cfg_img_scale=s["cfg_img_scale"],
        cfg_interval=tuple(s["cfg_interval"]),
        timestep_shift=s["timestep_shift"],
        cfg_renorm_min=s["cfg_renorm_min"],
        cfg_renorm_type=s["cfg_renorm_type"],
        # the released inferencer takes the last image's size; image_shapes only matters without images
        size=None if has_image else tuple(case["image_shapes_arg"]),
        seed=case["seed"],
        layout="released",
    )
    result = generate_keeping_contexts(pipe, inputs=inputs, config=config)
    return case, pipe, result


@pytest.fixture(scope="module", params=CASES, ids=[c.name for c in CASES])
def ran(request):
    return (request.param, *_run(request.param))


@requires_fixture
def test_fixture_has_cases():
    assert CASES, f"no interleave_inference cases under {fixture_dir()}"


def test_output_size(ran):
    _, case, _, result = ran
    assert list(result.size) == case["image_shape"]


def test_context_layout(ran):
    _, case, _, result = ran
    for ref_name, ours in CONTEXT_NAMES.items():
        ref = case["context_layout"][ref_name]
        plan = result.contexts[ours].plan
        assert plan.length == ref["kv_len"], ref_name
        assert plan.next_rope == ref["rope"], ref_name
        got = [(b.kind, b.length, b.rope, b.rope_after) for b in plan.blocks]
        kinds = {"text": "text", "vae_image": "vae", "vit_image": "vit"}
        want = [(kinds[b["kind"]], b["length"], b["rope_start"], b["rope_after"]) for b in ref["blocks"]]
        assert got == want, ref_name
        for block, rb in zip(plan.blocks, ref["blocks"], strict=True):
            if rb["kind"] == "text":
                assert list(block.token_ids) == rb["token_ids"]


def test_kv_caches(ran):
    case_dir, case, pipe, result = ran
    kv = load_file(str(case_dir / "kv_cache.safetensors"))
    for ref_name, ours in CONTEXT_NAMES.items():
        cache = result.contexts[ours].cache
        for layer in range(pipe.arch.llm.num_layers):
            key = f"{ref_name}.layer{layer}.key"
            if key not in kv:  # an empty context stores nothing
                assert cache.length == 0
                continue
            k, v = cache.rows(layer)
            torch.testing.assert_close(k, kv[key], atol=ATOL, rtol=RTOL)
            torch.testing.assert_close(v, kv[f"{ref_name}.layer{layer}.value"], atol=ATOL, rtol=RTOL)


def test_noise_matches_seeded_draws(ran):
    case_dir, case, _, result = ran
    noise = load_file(str(case_dir / "noise.safetensors"))
    g = torch.Generator().manual_seed(case["seed"])
    for k in range(sum(x["type"] == "image" for x in case["inputs"])):
        eps = noise[f"vae_posterior_eps_{k}"]
        torch.testing.assert_close(torch.randn((1, *eps.shape), generator=g)[0], eps, atol=0, rtol=0)
    init = noise["init_noise_packed"]
    torch.testing.assert_close(torch.randn(init.shape, generator=g), init, atol=0, rtol=0)


def test_final_latent_and_image(ran):
    case_dir, case, pipe, result = ran
    exp = load_file(str(case_dir / "expected.safetensors"))
    torch.testing.assert_close(result.latents, exp["final_latent_packed"], atol=ATOL, rtol=RTOL)
    grid = (result.size[0] // pipe.arch.pixels_per_token, result.size[1] // pipe.arch.pixels_per_token)
    raw = pipe.decode_raw(result.latents, grid)[0]
    torch.testing.assert_close(raw, exp["decoded_raw"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close((raw * 0.5 + 0.5).clamp(0, 1), exp["decoded_image_float"], atol=ATOL, rtol=RTOL)
    got = np.asarray(result.image, dtype=np.int16)
    want = exp["decoded_image_uint8"].numpy().astype(np.int16)
    diff = np.abs(got - want)
    assert diff.max() <= 1
    assert (diff > 0).mean() <= 0.005


def test_explicit_noise_gives_same_result(ran):
    """Passing the fixture's initial noise as ``latents`` reproduces the seeded run exactly."""
    case_dir, case, pipe, result = ran
    noise = load_file(str(case_dir / "noise.safetensors"))
    again = pipe(
        inputs=[x["text"] if x["type"] == "text" else case_dir / x["file"] for x in case["inputs"]],
        config=result.config,
        latents=noise["init_noise_packed"],
    )
    torch.testing.assert_close(again.latents, result.latents, atol=0, rtol=0)
