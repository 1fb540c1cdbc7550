"""``sigma bench --suite layouts``: what the SIGMA (`trained`) layout costs against the `released` one, measured
side by side in one run on a mid-size random model without a ViT (as SIGMA's weights), two references at 256 px.

For each layout and prefill strategy it times a whole generation, the prefill of the three guidance contexts,
and one denoising step, and counts the context lengths. Ratios are taken within the run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from PIL import Image

from sigma_studio.model.config import ArchConfig, GenerationConfig, LLMConfig, ResizeSpec, VAEConfig
from sigma_studio.model.request import build_request

from .bench import build_pipeline

PROMPT = "Place <id>the man <img1> next to <subject>the dog <img2> in a park"


def mid() -> ArchConfig:
    """A mid-size BAGEL-MoT without the ViT (SIGMA's shape): big enough that the matmuls, not Python, dominate."""
    return ArchConfig(
        llm=LLMConfig(
            hidden_size=512, num_layers=6, num_heads=8, num_kv_heads=2, intermediate_size=1536, vocab_size=320
        ),  # fmt: skip
        vit=None,
        vae=VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, z_channels=4, scale_factor=0.6, shift_factor=0.08),
        max_latent_size=32,
        vae_transform=ResizeSpec(256, 128, 16),
        vit_slot_transform=ResizeSpec(224, 112, 14),
        default_layout="trained",
    )


@dataclass
class LayoutTiming:
    layout: str
    prefill: str  # "chunked" (one block per forward, the released way) | "spans"
    seconds: float
    prefill_seconds: float
    step_seconds: float
    context_tokens: list[int]


def _time_one(pipe, layout: str, chunked: bool, size: int, steps: int) -> LayoutTiming:
    refs = [Image.new("RGB", (size, size), c) for c in ("red", "blue")]
    config = GenerationConfig(steps=steps, seed=0, size=(size, size), layout=layout)
    request = build_request(PROMPT, refs, arch=pipe.arch, config=config)
    pipe.chunked_prefill = chunked
    marks: list[float] = []
    start = time.perf_counter()
    result = pipe._generate(request, progress=lambda i, n: marks.append(time.perf_counter()), keep_contexts=True)
    total = time.perf_counter() - start
    steps_done = marks[: len(marks) - 1]  # the last mark comes after decoding
    step = (steps_done[-1] - steps_done[0]) / max(1, len(steps_done) - 1)
    lengths = sorted({id(c): c.plan.length for c in result.contexts.values()}.values(), reverse=True)
    prefill_time = steps_done[0] - start - step  # everything before the first step: encode + prefill
    return LayoutTiming(layout, "chunked" if chunked else "spans", total, prefill_time, step, lengths)


def layout_suite(size: int = 256, steps: int = 10, threads: int | None = None, repeats: int = 2) -> dict:
    """Best-of-``repeats`` timings of released/trained x chunked/spans, and the ratios that matter."""
    if threads:
        torch.set_num_threads(threads)
    arch = mid()
    pipe = build_pipeline(arch, "cpu", torch.device("cpu"), None)
    params = sum(p.numel() for p in pipe.model.parameters())
    _time_one(pipe, "trained", False, size, 3)  # warm-up
    rows = []
    for layout in ("released", "trained"):
        for chunked in (True, False):
            runs = [_time_one(pipe, layout, chunked, size, steps) for _ in range(repeats)]
            rows.append(min(runs, key=lambda r: r.seconds))
    by = {(r.layout, r.prefill): r for r in rows}
    ratios = {
        "trained/released (spans)": by["trained", "spans"].seconds / by["released", "spans"].seconds,
        "trained/released (chunked)": by["trained", "chunked"].seconds / by["released", "chunked"].seconds,
        "trained chunked/spans": by["trained", "chunked"].seconds / by["trained", "spans"].seconds,
        "trained prefill chunked/spans": by["trained", "chunked"].prefill_seconds
        / by["trained", "spans"].prefill_seconds,
    }
    return {"params_m": params / 1e6, "size": size, "steps": steps, "threads": torch.get_num_threads(),
            "results": [asdict(r) for r in rows], "ratios": ratios}  # fmt: skip
