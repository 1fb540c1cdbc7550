"""``sigma bench --suite speed``: fewer network evaluations against quality, measured in one run.

For each setting of ``guidance_every`` (evaluate the guidance branches every N steps, reuse their offset from the
full branch in between) it reports, on the shipped shapes model and its held-out evaluation: the branch
evaluations per image, the wall time per image, the accuracy per family (the shapes world's pixel reading) and the
PSNR of each picture against the exact path's picture of the same row and seed; and on the mid random model, the
wall time of the three-branch SIGMA case (two references, trained layout, 256 px).
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

SETTINGS = (1, 2, 4, 6, 8)


@dataclass
class SpeedRow:
    every: int
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


def _mid_case(every: int, steps: int) -> float:
    pipe = build_pipeline(mid(), "cpu", torch.device("cpu"), None)
    config = GenerationConfig(steps=steps, seed=0, size=(256, 256), guidance_every=every)
    request = build_request(PROMPT_MID, two_references(256), arch=pipe.arch, config=config)
    pipe(request.replace(config=config.replace(steps=3)))  # warm-up
    start = time.perf_counter()
    pipe(request)
    return time.perf_counter() - start


def speed_suite(per_family: int = 20, mid_steps: int = 50) -> list[SpeedRow]:
    """One row per ``guidance_every`` setting in ``SETTINGS``, the first (1) being the exact path."""
    pipe = load_pipeline("shapes", mode="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        make_world(tmp, rows=10, eval_rows=per_family + per_family % 2)
        for every in SETTINGS:
            counter = _Counter()
            batching_module.StepRunner = counter
            try:
                start = time.perf_counter()
                summary, records = evaluate_pipeline(
                    pipe, str(Path(tmp) / "eval"), per_family=per_family,
                    config=GenerationConfig(guidance_every=every), save_dir=Path(tmp) / f"every{every}",
                )  # fmt: skip
                seconds = time.perf_counter() - start
            finally:
                batching_module.StepRunner = counter.real
            families = {fam: s["accuracy"] for fam, s in summary.items()}
            exact, ours = Path(tmp) / "every1", Path(tmp) / f"every{every}"
            psnrs = [_psnr(p, ours / p.relative_to(exact)) for p in sorted(exact.rglob("*.png"))] if every > 1 else []
            rows.append(SpeedRow(every, counter.count / len(records), seconds / len(records),
                                 float(np.mean(list(families.values()))), families,
                                 float(np.mean(psnrs)) if psnrs else None, _mid_case(every, mid_steps)))  # fmt: skip
    return rows
