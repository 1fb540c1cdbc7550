"""The denoising loop of one or several generations: their velocity queries, and the step runner they share.

:func:`denoise_jobs` is what :meth:`SigmaPipeline._generate` runs for one request and
:meth:`SigmaPipeline.generate_batch` for several. Several requests of the same output size share each step's
forward: their query rows are batched into one pass through the decoder (every linear layer sees all their rows
at once) while each attends to its own KV caches, so a server with queued requests fills the GPU better than
running them one after another. Nothing a request computes depends on the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..request.build import GenerationRequest
from .engine import Context
from .graphs import StepRunner
from .parallel import gather_velocities
from .sampler import Trajectory, denoise_batch
from .sequence import GuidancePlans


@dataclass
class Job:
    """One request between its prefill and its decode."""

    request: GenerationRequest
    layout: str
    plans: GuidancePlans
    contexts: dict[str, Context]  # "full", "text", "image" (identical contexts are one object)
    grid: tuple[int, int]
    seed: int | None
    x: torch.Tensor  # the initial state, float32 [N, P]
    blend: Callable | None
    start: float  # perf_counter at the request's start
    progress: Callable[[int, int], None] | None
    plan: str | None = None  # think mode: the plan written before drawing

    def callback(self):
        if self.progress is None:
            return None
        return lambda step, total, _x: self.progress(step, total + 1)  # N steps are N-1 updates, then the decode


def _unique(job: Job, branches: tuple[str, ...]) -> list[Context]:
    """The contexts a step evaluates: identical contexts give identical velocities, so each runs once."""
    unique: list[Context] = []
    for name in branches:
        if all(job.contexts[name] is not u for u in unique):
            unique.append(job.contexts[name])
    return unique


def denoise_jobs(pipe, jobs: list[Job], batched: bool = True) -> tuple[list[torch.Tensor], list[int]]:
    """Denoise ``jobs`` together; returns their final latents and each one's branch evaluations.

    ``batched``: every branch of every job in one forward per step; ``False`` runs each branch alone (the plain
    reference path the tests and the benchmark compare against). With ``pipe.branch_group`` (a
    ``torch.distributed`` process group) each rank evaluates its share of the branches (:mod:`.parallel`)."""
    grid = jobs[0].grid
    if any(job.grid != grid for job in jobs):
        raise InputError("requests generated together must have the same output size; group them by size")
    group = pipe.branch_group
    if group is not None and len(jobs) > 1:
        raise InputError("guidance branches on several processes serve one request at a time, not a batch")
    graphs = pipe.acceleration.graphs and pipe.device.type == "cuda"
    run = StepRunner(pipe.model, grid, pipe.tokenizer.ids, pipe.device, static=graphs, capture=graphs,
                     regions=pipe.regions)  # fmt: skip
    counts = [0] * len(jobs)

    def velocity(asks: list[tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]]) -> list[dict[str, torch.Tensor]]:
        """The asked branches of each trajectory; one that asks none (its step is forecast) is left out."""
        idx = [k for k, (_x, _t, branches) in enumerate(asks) if branches]
        sub = _evaluate(idx, [asks[k] for k in idx]) if idx else []
        return [sub[idx.index(k)] if k in idx else {} for k in range(len(asks))]

    def _evaluate(idx: list[int], asks) -> list[dict[str, torch.Tensor]]:
        chosen = [jobs[k] for k in idx]
        uniques = [_unique(job, branches) for job, (_x, _t, branches) in zip(chosen, asks, strict=True)]
        for k, unique in zip(idx, uniques, strict=True):
            counts[k] += len(unique)
        if group is not None:  # this rank's share of the contexts, then every rank gathers every velocity
            x, t = asks[0][0], asks[0][1]
            like = x.new_empty(x.shape, dtype=pipe.model.dtype, device=pipe.device)
            outs = gather_velocities(lambda idx: run([uniques[0][i] for i in idx], x, t), len(uniques[0]), like, group)
        elif not batched:
            outs = [run([c], x, t)[0] for (x, t, _b), unique in zip(asks, uniques, strict=True) for c in unique]
        elif len(chosen) == 1:
            outs = run(uniques[0], asks[0][0], asks[0][1])
        else:
            x = torch.stack([a[0].to(pipe.device) for a in asks])
            t = torch.stack([torch.as_tensor(a[1], dtype=torch.float32).to(pipe.device) for a in asks])
            outs = run([c for u in uniques for c in u], x, t, tuple(len(u) for u in uniques))
        results, i = [], 0
        for job, (_x, _t, branches), unique in zip(chosen, asks, uniques, strict=True):
            mine, i = outs[i : i + len(unique)], i + len(unique)
            results.append({name: mine[next(j for j, u in enumerate(unique) if u is job.contexts[name])]
                            for name in branches})  # fmt: skip
        return results

    trajectories = [Trajectory(job.x, job.request.config, job.callback(), job.blend) for job in jobs]
    return denoise_batch(trajectories, velocity), counts
