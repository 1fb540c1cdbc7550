"""``sigma bench --suite throughput``: images per minute when 1, 2 or 4 requests of the same size are generated
together (one forward per step for all of them, :meth:`SigmaPipeline.generate_batch`) against one after another.

The mid model (SIGMA's shape, random weights), the two-reference SIGMA prompt, the three guidance contexts; each
request its own seed. One warm-up batch of two steps before each timed one."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from sigma_studio.model import GenerationConfig, build_request
from sigma_studio.model.run.pipeline import SigmaPipeline

from .cases import PROMPT_MID, two_references
from .equivalence import relative_error
from .flops import sync
from .weights import build_pipeline, mid

CONCURRENCY = (1, 2, 4)


@dataclass
class ThroughputRow:
    requests: int
    together_seconds: float  # one generate_batch of all of them
    apart_seconds: float  # the same requests one after another
    together_per_minute: float
    apart_per_minute: float
    speedup: float  # together over apart
    max_rel_error: float  # largest relative difference of a request's latents, together against apart


def _requests(pipe: SigmaPipeline, k: int, size: int, steps: int) -> list:
    config = GenerationConfig(steps=steps, size=(size, size))
    refs = two_references(size)
    return [build_request(PROMPT_MID, refs, arch=pipe.arch, config=config.replace(seed=s)) for s in range(k)]


def _timed(pipe: SigmaPipeline, fn):
    sync(pipe.device)
    start = time.perf_counter()
    out = fn()
    sync(pipe.device)
    return out, time.perf_counter() - start


def throughput_suite(pipe: SigmaPipeline | None = None, size: int = 256, steps: int = 20,
                     concurrency: tuple[int, ...] = CONCURRENCY) -> list[ThroughputRow]:  # fmt: skip
    """One row per number of requests; ``pipe`` defaults to the mid model on the CPU."""
    pipe = pipe or build_pipeline(mid(), "cpu", torch.device("cpu"), None)
    rows = []
    for k in concurrency:
        requests = _requests(pipe, k, size, steps)
        pipe.generate_batch([r.replace(config=r.config.replace(steps=2)) for r in requests])  # warm-up
        together, t_together = _timed(pipe, lambda rs=requests: pipe.generate_batch(rs))
        apart, t_apart = _timed(pipe, lambda rs=requests: [pipe(r) for r in rs])
        err = max(relative_error(a.latents, b.latents) for a, b in zip(together, apart, strict=True))
        rows.append(ThroughputRow(k, t_together, t_apart, 60 * k / t_together, 60 * k / t_apart,
                                  t_apart / t_together, err))  # fmt: skip
    return rows
