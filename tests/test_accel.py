"""The opt-in speed-ups of the denoising step compute the same function as the eager path (issue 25).

* CUDA graphs: the capture logic (static input buffers, outputs cloned out, one prepared step per set of
  guidance branches) is checked on the CPU by "replaying" eagerly on the static buffers; the captured graph
  itself is the ``gpu`` test at the end.
* Compilation: the tiny model's decoder layers compiled by inductor (regional: one graph for every layer)
  against eager, on the CPU.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from sigma_studio.model import InputError
from sigma_studio.model.run.accel import Acceleration, check_accel, parse_accel
from sigma_studio.model.run.graphs import StaticStep, StepRunner

from .conftest import generate_keeping_contexts

PROMPT = "Place <id>the man <img1> next to <subject>the dog <img2>"


@pytest.fixture(scope="module")
def prefilled(tiny_pipe):
    images = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    result = generate_keeping_contexts(tiny_pipe, PROMPT, images, steps=3, seed=4, size=(64, 80))
    grid = (result.size[0] // tiny_pipe.arch.pixels_per_token, result.size[1] // tiny_pipe.arch.pixels_per_token)
    contexts = list({id(c): c for c in result.contexts.values()}.values())
    return contexts, grid


def _run_steps(tiny_pipe, contexts, grid, runner: StepRunner, seed: int = 0) -> list[torch.Tensor]:
    """Eight steps alternating the branch sets, as guidance turning on and off does; fresh x and t each step."""
    g = torch.Generator().manual_seed(seed)
    outs = []
    for i in range(8):
        chosen = contexts if i % 3 else contexts[:1]
        x = torch.randn(grid[0] * grid[1], tiny_pipe.arch.patch_latent_dim, generator=g)
        t = torch.rand((), generator=g)
        outs += runner(chosen, x, t)
    return outs


def test_static_steps_equal_eager_steps_exactly(tiny_pipe, prefilled):
    contexts, grid = prefilled
    ids = tiny_pipe.tokenizer.ids
    eager = StepRunner(tiny_pipe.model, grid, ids, "cpu")
    static = StepRunner(tiny_pipe.model, grid, ids, "cpu", static=True, capture=False)
    a, b = _run_steps(tiny_pipe, contexts, grid, eager), _run_steps(tiny_pipe, contexts, grid, static)
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert len(static.steps) == 2 and all(isinstance(s, StaticStep) for s in static.steps.values())
    assert static.evaluations == eager.evaluations == sum(len(contexts) if i % 3 else 1 for i in range(8))


def test_static_outputs_are_not_the_static_buffers(tiny_pipe, prefilled):
    """A later step must not overwrite what an earlier one returned (the sampler keeps offsets across steps)."""
    contexts, grid = prefilled
    runner = StepRunner(tiny_pipe.model, grid, tiny_pipe.tokenizer.ids, "cpu", static=True)
    x = torch.randn(grid[0] * grid[1], tiny_pipe.arch.patch_latent_dim)
    first = runner(contexts, x, torch.tensor(0.7))
    kept = [v.clone() for v in first]
    runner(contexts, x * 2, torch.tensor(0.2))
    assert all(torch.equal(a, b) for a, b in zip(first, kept, strict=True))


def test_compiled_regions_equal_eager_and_serve_every_layer(tiny_pipe):
    pytest.importorskip("torch._inductor")
    from torch._dynamo.utils import counters

    images = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    eager = tiny_pipe(PROMPT, images, steps=4, seed=3).latents
    compiled = tiny_pipe.__class__(tiny_pipe.model, tiny_pipe.vae, tiny_pipe.tokenizer, mode=tiny_pipe.mode)
    compiled.accelerate(Acceleration(compile=True))
    before = counters["stats"]["unique_graphs"]
    out = compiled(PROMPT, images, steps=4, seed=3).latents
    graphs = counters["stats"]["unique_graphs"] - before
    rel = float((out - eager).norm() / eager.norm())
    assert rel < 1e-5, rel
    # one graph per region serves every layer (guidance is on at every step: one set of branches, one shape)
    assert graphs == 2, graphs


def test_accel_options_are_checked():
    assert parse_accel("auto", "cpu") == Acceleration()
    assert parse_accel("auto", "cuda").graphs and parse_accel("auto", "cuda", "offload") == Acceleration()
    assert parse_accel("graphs, compile", "cuda") == Acceleration(graphs=True, compile=True)
    autotune = parse_accel("graphs,autotune", "cuda")
    assert autotune.compile and autotune.compile_mode == "max-autotune-no-cudagraphs"
    assert autotune.label == "graphs,autotune" and parse_accel("compile", "cpu").label == "compile"
    with pytest.raises(InputError, match="comma list of graphs, compile, autotune"):
        parse_accel("graph", "cuda")
    with pytest.raises(InputError, match="needs a CUDA device"):
        check_accel(Acceleration(graphs=True), "cpu", "cpu")
    with pytest.raises(InputError, match="--mode offload"):
        check_accel(Acceleration(compile=True), "cuda", "offload")
    with pytest.raises(InputError, match="compile mode"):
        Acceleration(compile=True, compile_mode="fastest")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("accel", ["graphs", "graphs,compile"])
def test_cuda_graph_generation_equals_eager(accel):
    from sigma_studio.model import load_pipeline

    images = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    pipe = load_pipeline("tiny", device="cuda", dtype=torch.float32, accel="none")
    eager = pipe(PROMPT, images, steps=6, seed=3, cfg_interval=(0.4, 1.0)).latents
    pipe.accelerate(parse_accel(accel, "cuda"))
    out = pipe(PROMPT, images, steps=6, seed=3, cfg_interval=(0.4, 1.0)).latents
    again = pipe(PROMPT, images, steps=6, seed=3, cfg_interval=(0.4, 1.0)).latents
    rel = float((out - eager).norm() / eager.norm())
    print(f"--accel {accel}: relative error against eager {rel:.2e}")
    assert torch.equal(out, again) and rel < (1e-6 if accel == "graphs" else 1e-4)
