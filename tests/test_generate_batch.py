"""Several requests of the same size share each step's forward (issue 25, item 6): each result equals the one
the request gives alone, whatever its prompt, references, seed and guidance settings."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from sigma_studio.model import GenerationConfig, InputError, build_request

SIZE = (64, 80)


def _requests(pipe):
    red, blue = (Image.new("RGB", (64, 64), c) for c in ("red", "blue"))
    base = GenerationConfig(steps=5, size=SIZE)
    return [
        build_request("Place <id>the man <img1> next to <subject>the dog <img2>", [red, blue], arch=pipe.arch,
                      config=base.replace(seed=1)),
        build_request("a red fox in snow", None, arch=pipe.arch,
                      config=base.replace(seed=2, cfg_interval=(0.5, 1.0), cfg_img_scale=1.0)),
        build_request("<style>this painting <img1> of a house", [blue], arch=pipe.arch,
                      config=base.replace(seed=3, guidance_every=2, cfg_renorm_type="global")),
    ]  # fmt: skip


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_batched_requests_equal_each_request_alone(tiny_pipe):
    requests = _requests(tiny_pipe)
    together = tiny_pipe.generate_batch(requests)
    for request, result in zip(requests, together, strict=True):
        alone = tiny_pipe(request)
        assert _rel(result.latents, alone.latents) < 1e-5
        assert result.seed == alone.seed and result.evaluations == alone.evaluations
        assert result.record.to_json() == alone.record.to_json()


def test_progress_follows_the_shared_loop(tiny_pipe):
    calls = []
    tiny_pipe.generate_batch(_requests(tiny_pipe)[:2], progress=lambda i, n: calls.append((i, n)))
    assert calls == [(i, 5) for i in range(1, 6)]


def test_requests_that_cannot_share_a_loop_are_refused(tiny_pipe):
    a, b, _ = _requests(tiny_pipe)
    other_size = b.replace(config=b.config.replace(size=(64, 64)))
    with pytest.raises(InputError, match="same output size"):
        tiny_pipe.generate_batch([a, other_size])
    with pytest.raises(InputError, match="share steps and shift"):
        tiny_pipe.generate_batch([a, b.replace(config=b.config.replace(steps=6))])
    assert tiny_pipe.generate_batch([]) == []
