"""PURE rectified-flow sampling: the shifted schedule, the three-branch CFG combination and the Euler loop.

Nothing here touches a module: the loop calls a ``velocity(x, t, branches)`` function that returns the raw
prediction of each requested branch (``"full"``, ``"text"`` = text-dropped context, ``"image"`` = image-dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..config import GenerationConfig
from ..errors import InputError

VelocityFn = Callable[[torch.Tensor, torch.Tensor, tuple[str, ...]], dict[str, torch.Tensor]]
StepCallback = Callable[[int, int, torch.Tensor], None]


def timesteps(steps: int, shift: float) -> torch.Tensor:
    """t[0..steps-1] in float32: ``linspace(1, 0, steps)`` warped by ``shift*u / (1 + (shift-1)*u)``."""
    u = torch.linspace(1.0, 0.0, steps, dtype=torch.float32)
    return shift * u / (1 + (shift - 1) * u)


@dataclass(frozen=True)
class StepScales:
    text: float
    image: float

    def branches(self) -> tuple[str, ...]:
        """Branches the reference evaluates at this step, in its order."""
        return ("full",) + (("text",) if self.text > 1 else ()) + (("image",) if self.image > 1 else ())


def step_scales(t: torch.Tensor | float, cfg: GenerationConfig) -> StepScales:
    """Guidance is on iff ``lo < t <= hi`` (strict on the left); off means both scales are 1.

    The comparison happens in float32, like the reference's tensor comparison: a step whose float32 time equals
    float32(lo) is off even where the float64 values would differ.
    """
    lo, hi = cfg.cfg_interval
    t32 = torch.as_tensor(t, dtype=torch.float32)
    if bool(t32 > lo) and bool(t32 <= hi):
        return StepScales(cfg.cfg_text_scale, cfg.cfg_img_scale)
    return StepScales(1.0, 1.0)


def _row_norm(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x.float(), dim=-1, keepdim=True)


def combine(
    v: torch.Tensor,
    v_text: torch.Tensor | None,
    v_image: torch.Tensor | None,
    scales: StepScales,
    renorm_type: str,
    renorm_min: float,
) -> torch.Tensor:
    """Classifier-free guidance of velocities [N, P] (released semantics, dtype behaviour included).

    ``text_channel`` renormalises per token after the text step, before the image step; ``global`` (one scalar
    over all tokens) and ``channel`` (per token) renormalise after both. Image guidance applies only together
    with text guidance (scale > 1).
    """
    if scales.text <= 1:
        return v
    u = v_text + scales.text * (v - v_text)
    use_image = scales.image > 1
    if renorm_type == "text_channel":
        r = (_row_norm(v) / (_row_norm(u) + 1e-8)).clamp(min=renorm_min, max=1.0)
        u = u * r  # float32
        return v_image + scales.image * (u - v_image) if use_image else u
    w = v_image + scales.image * (u - v_image) if use_image else u
    if renorm_type == "global":
        r = torch.linalg.vector_norm(v.float()) / (torch.linalg.vector_norm(w.float()) + 1e-8)
        return w * r.clamp(min=renorm_min, max=1.0)  # a 0-dim scale keeps w's dtype
    if renorm_type == "channel":
        return w * (_row_norm(v) / (_row_norm(w) + 1e-8)).clamp(min=renorm_min, max=1.0)
    raise ValueError(f"unknown renorm type {renorm_type!r}")


class GuidanceReuse:
    """Evaluate the guidance branches only every ``every`` steps; in between, each branch is predicted as the full
    branch's velocity now plus that branch's offset from it at the last evaluation (the guidance residual changes
    slowly along the trajectory). ``every=1`` is the exact path: every branch at every step.

    :meth:`needed` says which branches to evaluate at a step, :meth:`complete` fills in the predicted ones, so
    several trajectories can share one evaluation (:func:`denoise_batch`)."""

    def __init__(self, every: int = 1):
        self.every = every
        self.offsets: dict[str, torch.Tensor] = {}
        self.age = 0

    def needed(self, branches: tuple[str, ...]) -> tuple[str, ...]:
        others = [b for b in branches if b != "full"]
        if self.every > 1 and others and self.age < self.every and all(b in self.offsets for b in others):
            return ("full",)
        return branches

    def complete(self, out: dict[str, torch.Tensor], branches: tuple[str, ...]) -> dict[str, torch.Tensor]:
        if self.every == 1:  # the exact path: nothing kept, nothing predicted
            return out
        others = [b for b in branches if b != "full"]
        if set(out) != set(branches):
            self.age += 1
            return out | {b: out["full"] + self.offsets[b] for b in others}
        self.offsets = {b: out[b] - out["full"] for b in others}
        self.age = 1
        return out

    def velocities(self, velocity: VelocityFn, x: torch.Tensor, t: torch.Tensor, branches: tuple[str, ...]):
        return self.complete(velocity(x, t, self.needed(branches)), branches)


class Forecast:
    """TaylorSeer-style forecasting at the network's output: the network runs only every ``every`` steps (and at
    the first two, to have a slope); in between, each branch's velocity is extrapolated to first order from its
    last two evaluations, ``v(t) = v1 + (t - t1) (v1 - v0) / (t1 - t0)``, at no network cost. ``every=1`` is the
    exact path. It composes with :class:`GuidanceReuse`, which decides what an evaluated step runs."""

    def __init__(self, every: int = 1):
        self.every = every
        self.history: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # branch -> last two (t, v)
        self.age = 0

    def skips(self, t: torch.Tensor, branches: tuple[str, ...]) -> bool:
        """True when this step is forecast (no network evaluation)."""
        ready = all(len(self.history.get(b, ())) == 2 for b in branches)
        return self.every > 1 and ready and self.age < self.every

    def forecast(self, t: torch.Tensor, branches: tuple[str, ...]) -> dict[str, torch.Tensor]:
        self.age += 1
        out = {}
        for b in branches:
            (t0, v0), (t1, v1) = self.history[b]
            out[b] = v1 + (t - t1) * (v1 - v0) / (t1 - t0)
        return out

    def record(self, t: torch.Tensor, out: dict[str, torch.Tensor]) -> None:
        if self.every == 1:
            return
        for b, v in out.items():
            self.history[b] = [*self.history.get(b, [])[-1:], (t, v)]
        self.age = 1


@dataclass
class Trajectory:
    """One generation's state in :func:`denoise_batch`."""

    x: torch.Tensor  # float32 [N, P], noise at t=1
    cfg: GenerationConfig
    callback: StepCallback | None = None
    blend: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None


# (x, t, branches) of each trajectory -> the raw velocity of each asked branch, per trajectory
BatchVelocityFn = Callable[[list[tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]]], list[dict[str, torch.Tensor]]]


def denoise_batch(trajectories: list[Trajectory], velocity: BatchVelocityFn) -> list[torch.Tensor]:
    """Integrate several trajectories in lockstep, one velocity call per step for all of them (a server batching
    queued requests). They share the schedule (steps and shift); guidance scales, intervals, renorm and
    ``guidance_every`` stay per trajectory. Each trajectory's result is the one :func:`denoise` gives alone."""
    first = trajectories[0].cfg
    if any((tr.cfg.steps, tr.cfg.timestep_shift) != (first.steps, first.timestep_shift) for tr in trajectories):
        raise InputError("requests generated together must share steps and shift (--steps, --shift); group them")
    t = timesteps(first.steps, first.timestep_shift).to(trajectories[0].x.device)
    total = first.steps - 1
    guides = [GuidanceReuse(tr.cfg.guidance_every) for tr in trajectories]
    forecasts = [Forecast(tr.cfg.forecast_every) for tr in trajectories]
    xs = [tr.x for tr in trajectories]
    for i in range(total):
        scales = [step_scales(t[i], tr.cfg) for tr in trajectories]
        skip = [f.skips(t[i], s.branches()) for f, s in zip(forecasts, scales, strict=True)]
        asked = [() if sk else g.needed(s.branches()) for g, s, sk in zip(guides, scales, skip, strict=True)]
        outs = velocity([(x, t[i], a) for x, a in zip(xs, asked, strict=True)])
        for k, (tr, guide, sc) in enumerate(zip(trajectories, guides, scales, strict=True)):
            if skip[k]:
                out = forecasts[k].forecast(t[i], sc.branches())
            else:
                out = guide.complete(outs[k], sc.branches())
                forecasts[k].record(t[i], out)
            cfg = tr.cfg
            v = combine(out["full"], out.get("text"), out.get("image"), sc, cfg.cfg_renorm_type, cfg.cfg_renorm_min)
            xs[k] = xs[k] - v * (t[i] - t[i + 1])
            if tr.blend is not None:
                xs[k] = tr.blend(xs[k], t[i + 1])
            if tr.callback is not None:
                tr.callback(i + 1, total, xs[k])
    return xs


def denoise(
    x: torch.Tensor,
    velocity: VelocityFn,
    cfg: GenerationConfig,
    callback: StepCallback | None = None,
    blend: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Integrate from t=1 (noise ``x``, float32 [N, P]) to t=0 with ``cfg.steps - 1`` Euler steps.

    ``callback(step, total, x)`` runs after each step; ``blend(x, t_next)`` may replace parts of the state after
    each step (used for inpainting-style insertion).
    """

    def one(asks):
        return [velocity(*asks[0]) if asks[0][2] else {}]  # no branches asked: a forecast step

    return denoise_batch([Trajectory(x, cfg, callback, blend)], one)[0]
