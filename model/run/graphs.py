"""The denoising step as a CUDA graph, and the per-generation runner that picks eager or graphed steps.

Within one generation every shape of the velocity query is fixed: the noisy latents, the query rows of each
branch, and the KV caches, preallocated with the query's tail slot. So each set of guidance branches (all three
while guidance is on, the full context alone outside the guidance interval or between ``--speed fast``'s
evaluations) is captured once on its first use and replayed at every later step: the ~30 kernel launches per
decoder layer become one graph launch, and the host never waits on Python between them.

:class:`StaticStep` is the capture logic: static input buffers that each call copies into, outputs cloned out
of the captured buffers. With ``capture=False`` (any device) it replays by running the step eagerly on those
buffers, which is how the CPU tests check the logic; with ``capture=True`` (CUDA) it replays the graph.
"""

from __future__ import annotations

import torch

from .engine import Context, QueryStep


class StaticStep:
    """One query step with static inputs: ``x``/``t`` are copied in, the velocities cloned out at each call.

    The first call runs eagerly on the static buffers: a real evaluation that also warms up (lazy
    initialisation, cuBLAS workspaces, compiled kernels' first runs). With ``capture`` the second call captures
    the step as a CUDA graph and every call from then on replays it, so no evaluation is spent on warming up.
    The query writes only its own tail slot of each cache, which every step overwrites, so capturing is safe.
    """

    def __init__(self, step: QueryStep, x: torch.Tensor, t: torch.Tensor, *, capture: bool):
        self.step, self.capture = step, capture
        self.x, self.t = x.detach().clone(), t.detach().clone()
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: list[torch.Tensor] = []
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> list[torch.Tensor]:
        self.x.copy_(x)
        self.t.copy_(t)
        self.calls += 1
        if self.capture and self.graph is None and self.calls > 1:
            graph = torch.cuda.CUDAGraph()
            # thread_local: a web server with one pipeline per GPU generates on several threads at once, and another
            # thread's allocations must not break this thread's capture
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.out = self.step(self.x, self.t)
            self.graph = graph
        if self.graph is not None:
            self.graph.replay()
            out = self.out
        else:
            out = self.step(self.x, self.t)
        return [o.clone() for o in out]  # the next replay overwrites the captured outputs


class StepRunner:
    """The velocity queries of one generation: one prepared step per set of contexts, built on first use.

    ``regions``: compiled layer regions (:mod:`model.run.accel`). ``static`` routes every call through
    :class:`StaticStep` (captured as a CUDA graph when ``capture``); otherwise steps run eagerly.
    ``evaluations`` counts branch evaluations (one context for one step = one).
    """

    def __init__(self, model, grid, ids, device, *, static: bool = False, capture: bool = False, regions=None):
        self.model, self.grid, self.ids, self.device = model, grid, ids, torch.device(device)
        self.static, self.capture, self.regions = static, capture, regions
        self.steps: dict[tuple, QueryStep | StaticStep] = {}
        self.evaluations = 0

    def __call__(
        self, contexts: list[Context], x: torch.Tensor, t: torch.Tensor, groups: tuple[int, ...] | None = None
    ) -> list[torch.Tensor]:
        """Velocities against each context (:class:`~model.run.engine.QueryStep`; ``groups`` as there)."""
        key = (tuple(id(c) for c in contexts), groups)
        x, t = x.to(self.device), torch.as_tensor(t, dtype=torch.float32).to(self.device)
        step = self.steps.get(key)
        if step is None:
            step = QueryStep(self.model, contexts, self.grid, self.ids, self.device, self.regions, groups)
            if self.static:
                step = StaticStep(step, x, t, capture=self.capture)
            self.steps[key] = step
        self.evaluations += len(contexts)
        return step(x, t)
