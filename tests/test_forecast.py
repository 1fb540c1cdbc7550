"""``forecast_every`` (issue 25, item 7): the network runs every N steps and each branch's velocity is forecast to
first order in between (TaylorSeer-style). Exact where the velocity is linear in t, fewer evaluations, and a
forecasting request batched with an exact one gives what each gives alone."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from sigma_studio.model import GenerationConfig, InputError, build_request
from sigma_studio.model.run.sampler import denoise


def _linear_field(calls: list):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)

    def velocity(x, t, branches):
        calls.append(branches)
        return {name: a * (k + 1) + b * t for k, name in enumerate(branches)}

    return velocity


def test_forecasting_is_exact_for_a_velocity_linear_in_t():
    x = torch.randn(6, 4)
    exact_calls, forecast_calls = [], []
    cfg = GenerationConfig(steps=12, cfg_text_scale=3.0, cfg_img_scale=1.5)
    exact = denoise(x, _linear_field(exact_calls), cfg)
    forecast = denoise(x, _linear_field(forecast_calls), cfg.replace(forecast_every=3))
    assert torch.allclose(forecast, exact, rtol=1e-5, atol=1e-5)
    assert len(forecast_calls) < len(exact_calls) == 11
    assert len(forecast_calls) == 5  # steps 1 and 2 (a slope), then every third step: 2, 5, 8 after them


def test_forecast_every_one_is_the_exact_path(tiny_pipe):
    images = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    a = tiny_pipe("a man <id> <img1> and a dog <subject> <img2>", images, steps=5, seed=3)
    b = tiny_pipe("a man <id> <img1> and a dog <subject> <img2>", images, steps=5, seed=3, forecast_every=1)
    assert torch.equal(a.latents, b.latents) and a.evaluations == b.evaluations


def test_a_forecasting_request_batches_with_an_exact_one(tiny_pipe):
    red = Image.new("RGB", (64, 64), "red")
    base = GenerationConfig(steps=8, size=(64, 64))
    requests = [
        build_request("<subject>a cube <img1> on grass", [red], arch=tiny_pipe.arch, config=base.replace(seed=1)),
        build_request("a red fox in snow", None, arch=tiny_pipe.arch, config=base.replace(seed=2, forecast_every=3)),
    ]
    together = tiny_pipe.generate_batch(requests)
    for request, result in zip(requests, together, strict=True):
        alone = tiny_pipe(request)
        assert float((result.latents - alone.latents).norm() / alone.latents.norm()) < 1e-5
        assert result.evaluations == alone.evaluations
    assert together[1].evaluations < together[0].evaluations


def test_forecast_every_is_checked():
    with pytest.raises(InputError, match="--forecast-every must be a whole number from 1"):
        GenerationConfig(forecast_every=0)
