"""``sigma bench --suite speed``: fewer network evaluations against quality, measured in one run.

For each setting of ``guidance_every`` (evaluate the guidance branches every N steps, reuse their offset from the
full branch in between) and of ``forecast_every`` (run the network every N steps, forecast every branch's velocity
to first order in between, TaylorSeer-style), alone and together, it reports, on the shipped shapes model and its
held-out evaluation: the branch evaluations per image, the wall time per image, the accuracy per family (the
shapes world's pixel reading) and the PSNR of each picture against the exact path's picture of the same row and
seed; and on the mid random model, the wall time of the three-branch SIGMA case (two references, trained layout,
256 px).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sigma_studio.model import GenerationConfig, build_request, load_pipeline
from sigma_studio.model.run import batching as batching_module
from sigma_studio.model.shapes.evaluate import evaluate_pipeline
from sigma_studio.model.shapes.tasks import make_world

from .cases import PROMPT_MID, two_references
from .weights import build_pipeline, mid

# (name, GenerationConfig changes); the first is the exact path
SETTINGS: tuple[tuple[str, dict], ...] = (
    ("exact", {}),
    ("guidance every 2", {"guidance_every": 2}),
    ("guidance every 4", {"guidance_every": 4}),
    ("guidance every 6 (fast)", {"guidance_every": 6}),
    ("guidance every 8", {"guidance_every": 8}),
    ("forecast every 2", {"forecast_every": 2}),
    ("forecast every 3", {"forecast_every": 3}),
    ("fast + forecast every 2", {"guidance_every": 6, "forecast_every": 2}),
)


@dataclass
class SpeedRow:
    setting: str
    changes: dict
    forwards_per_image: float  # branch evaluations (one branch against one context = one)
    seconds_per_image: float
    accuracy: float  # mean over families of the family criterion
    families: dict[str, float]
    psnr_vs_exact: float | None
    mid_seconds: float  # the three-branch SIGMA case on the mid model


class _Counter:
    """Counts branch evaluations: stands in for the pipeline's step runner class and sums its runners' counts."""

    def __init__(self):
        self.real = batching_module.StepRunner
        self.runners = []

    def __call__(self, *args, **kwargs):
        self.runners.append(self.real(*args, **kwargs))
        return self.runners[-1]

    @property
    def count(self) -> int:
        return sum(r.evaluations for r in self.runners)


def _psnr(a: Path, b: Path) -> float:
    x, y = (np.asarray(Image.open(p), dtype=np.float64) for p in (a, b))
    mse = float(((x - y) ** 2).mean())
    return 100.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _mid_case(changes: dict, steps: int) -> float:
    pipe = build_pipeline(mid(), "cpu", torch.device("cpu"), None)
    config = GenerationConfig(steps=steps, seed=0, size=(256, 256), **changes)
    request = build_request(PROMPT_MID, two_references(256), arch=pipe.arch, config=config)
    pipe(request.replace(config=config.replace(steps=3)))  # warm-up
    start = time.perf_counter()
    pipe(request)
    return time.perf_counter() - start


def speed_suite(per_family: int = 60, mid_steps: int = 50) -> list[SpeedRow]:
    """One row per setting in ``SETTINGS``, the first being the exact path; ``per_family`` held-out rows of each
    of the five families (60: 300 pictures per setting, so a loss of 5 points is 15 of them)."""
    pipe = load_pipeline("shapes", mode="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        make_world(tmp, rows=10, eval_rows=per_family + per_family % 2)
        for k, (name, changes) in enumerate(SETTINGS):
            counter = _Counter()
            batching_module.StepRunner = counter
            try:
                start = time.perf_counter()
                summary, records = evaluate_pipeline(
                    pipe, str(Path(tmp) / "eval"), per_family=per_family,
                    config=GenerationConfig(**changes), save_dir=Path(tmp) / f"setting{k}",
                )  # fmt: skip
                seconds = time.perf_counter() - start
            finally:
                batching_module.StepRunner = counter.real
            families = {fam: s["accuracy"] for fam, s in summary.items()}
            exact, ours = Path(tmp) / "setting0", Path(tmp) / f"setting{k}"
            psnrs = [_psnr(p, ours / p.relative_to(exact)) for p in sorted(exact.rglob("*.png"))] if k else []
            rows.append(SpeedRow(name, changes, counter.count / len(records), seconds / len(records),
                                 float(np.mean(list(families.values()))), families,
                                 float(np.mean(psnrs)) if psnrs else None, _mid_case(changes, mid_steps)))  # fmt: skip
    return rows
