"""``sigma bench --suite layouts``: what the SIGMA (`trained`) layout costs against the `released` one, measured
side by side in one run on a mid-size random model without a ViT (as SIGMA's weights), two references at 256 px.

For each layout and prefill strategy it times a whole generation, the prefill of the three guidance contexts,
and one denoising step, and counts the context lengths. Ratios are taken within the run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from sigma_studio.model.config import GenerationConfig
from sigma_studio.model.request.build import build_request

from .cases import PROMPT_MID, two_references
from .weights import build_pipeline, mid


@dataclass
class LayoutTiming:
    layout: str
    prefill: str  # "chunked" (one block per forward, the released way) | "spans"
    seconds: float
    prefill_seconds: float
    step_seconds: float
    context_tokens: list[int]


def _time_one(pipe, layout: str, chunked: bool, size: int, steps: int) -> LayoutTiming:
    config = GenerationConfig(steps=steps, seed=0, size=(size, size), layout=layout)
    request = build_request(PROMPT_MID, two_references(size), arch=pipe.arch, config=config)
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
