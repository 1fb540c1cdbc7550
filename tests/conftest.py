"""Shared test helpers: the parity fixture directory and the tiny pipeline."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FIXTURE = REPO / "tests" / "fixtures" / "bagel-tiny"  # the public fixture, kept in the repository


@pytest.fixture(autouse=True, scope="module")
def _pil_pixel_limit():
    """A web server sets PIL's process-wide pixel limit to its own (webui.server.launch), as the one thing its
    process serves; here many servers, with small test limits, share one process: each module starts from the
    limit the module before it found."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = before


def fixture_dir() -> Path:
    return Path(os.environ.get("SIGMA_PARITY_FIXTURE", DEFAULT_FIXTURE))


requires_fixture = pytest.mark.skipif(
    not (fixture_dir() / "model").is_dir(),
    reason=f"parity fixture not found at {fixture_dir()} (set SIGMA_PARITY_FIXTURE)",
)


def fixture_cases(kind: str) -> list[Path]:
    cases = fixture_dir() / "cases"
    if not cases.is_dir():
        return []
    return sorted(
        p
        for p in cases.iterdir()
        if (p / "case.json").is_file() and json.loads((p / "case.json").read_text())["kind"] == kind
    )


def resize_spec(d: dict):
    """A ResizeSpec from the fixture's transform JSON (``max_image_size``, ``min_image_size``, ``image_stride``)."""
    from sigma_studio.model.config import ResizeSpec

    return ResizeSpec(d["max_image_size"], d["min_image_size"], d["image_stride"], d.get("max_pixels", 1806336))


def fixture_pipeline(visual_und: bool, **overrides):
    """The fixture's ``model/`` directory loaded like a released checkpoint, in float32, with the values the
    released code hard-codes in Python (VAE scale/shift) taken from its ``fixture_config.json``."""
    import torch

    from sigma_studio.model import load_pipeline

    model_dir = fixture_dir() / "model"
    fc = json.loads((model_dir / "fixture_config.json").read_text())
    return load_pipeline(
        model_dir,
        visual_und=visual_und,
        dtype=torch.float32,
        vae_scale_factor=fc["vae"]["scale_factor"],
        vae_shift_factor=fc["vae"]["shift_factor"],
        **overrides,
    )


@pytest.fixture(scope="session")
def tiny_pipe():
    from sigma_studio.model import load_pipeline

    return load_pipeline("tiny", seed=0)


def generate_keeping_contexts(pipe, prompt=None, images=None, *, inputs=None, config=None, **settings):
    """Run the pipeline and keep its KV caches in the result (the pipeline's test-only path)."""
    from sigma_studio.model import GenerationConfig, build_request

    cfg = (config or GenerationConfig()).replace(**settings)
    return pipe._generate(build_request(prompt, images, inputs=inputs, arch=pipe.arch, config=cfg), keep_contexts=True)


def assert_cache_is_one_packed_forward(model, ctx, inputs, ids, mask) -> None:
    """A prefilled context's KV cache, every layer, equals one packed forward of its whole plan under ``mask``."""
    import torch

    from sigma_studio.model.arch.qwen2_mot import Routing
    from sigma_studio.model.run.attention import PackedAttention
    from sigma_studio.model.run.engine import block_embeddings

    cpu = torch.device("cpu")
    hidden, gen = zip(*(block_embeddings(model, b, inputs, ids, cpu) for b in ctx.plan.blocks), strict=True)
    positions = torch.tensor([p for b in ctx.plan.blocks for p in b.positions()])
    packed, recorded = PackedAttention(mask), {}

    def attend(layer, q, k, v):
        recorded[layer] = (k, v)
        return packed(layer, q, k, v)

    model.decode(torch.cat(hidden), Routing.from_mask(torch.cat(gen)), positions, attend)
    assert recorded
    for layer, (k, v) in recorded.items():
        ck, cv = ctx.cache.rows(layer)
        torch.testing.assert_close(ck, k, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cv, v, atol=1e-5, rtol=1e-5)


def wait_until(done, timeout: float, what: str) -> None:
    """Poll ``done()`` until it holds; fail naming ``what`` after ``timeout`` seconds (a ceiling, never the expected
    wait): the one wait on a server's state (its queue, its log) for the tests that have no event to await."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)  # the poll's interval, not a wait that the test relies on


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(pipe, out: Path, *, limits=None, **launch_kwargs):
    """A web server on ``pipe`` (the page, its API, the REST and OpenAI routes) started by webui.server.launch, as
    ``sigma webui`` starts one, writing to ``out``: yields (url, jobs, demo) and closes the server after."""
    from sigma_studio.webui.blocks import build_demo
    from sigma_studio.webui.jobs import Jobs
    from sigma_studio.webui.limits import WebLimits
    from sigma_studio.webui.server import launch

    jobs, limits = Jobs(1), limits or WebLimits()
    demo = build_demo(pipe, outputs=out, jobs=jobs, limits=limits)
    port = free_port()
    launch(demo, pipe, outputs=out, jobs=jobs, limits=limits, port=port, quiet=True, **launch_kwargs)
    try:
        yield f"http://127.0.0.1:{port}", jobs, demo
    finally:
        demo.close()
