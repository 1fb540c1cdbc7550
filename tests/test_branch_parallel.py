"""Guidance branches on two processes (issue 25, item 5): two CPU ranks over gloo, each evaluating its share of
each step's contexts and gathering the rest, give the latents one process gives."""

from __future__ import annotations

import torch
import torch.multiprocessing as mp
from PIL import Image

PROMPT = "Place <id>the man <img1> next to <subject>the dog <img2>"
SETTINGS = dict(steps=5, seed=7, size=(64, 64), cfg_interval=(0.3, 1.0))  # guidance off for the last steps


def _images():
    return [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]


def _rank(rank: int, world: int, store: str, out: str) -> None:
    import torch.distributed as dist

    from sigma_studio.model import load_pipeline

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        pipe = load_pipeline("tiny", seed=0)
        pipe.branch_group = dist.group.WORLD
        result = pipe(PROMPT, _images(), **SETTINGS)
        torch.save({"latents": result.latents, "evaluations": result.evaluations}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_give_the_latents_of_one_process(tiny_pipe, tmp_path):
    alone = tiny_pipe(PROMPT, _images(), **SETTINGS)
    mp.spawn(_rank, args=(2, str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"out.{r}") for r in range(2)]
    assert torch.equal(ranks[0]["latents"], ranks[1]["latents"])  # every rank holds the same state
    rel = float((ranks[0]["latents"] - alone.latents).norm() / alone.latents.norm())
    assert rel < 1e-5, rel
    assert ranks[0]["evaluations"] == alone.evaluations  # the same branches, counted on every rank


def test_sigma_generate_under_torchrun_shares_the_branches(tmp_path):
    """``torchrun --nproc-per-node 2 -m sigma_studio.cli generate``: two CPU ranks, rank 0 writes the picture the
    single process writes."""
    import os
    import subprocess
    import sys

    import numpy as np

    args = ["generate", "Draw the <subject>shape <img1> in the <style>colour of <img2>.",
            "examples/shapes/yellow-triangle.png", "examples/shapes/blue-circle.png", "--model", "shapes",
            "--seed", "0", "--steps", "12"]  # fmt: skip
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    one = subprocess.run([sys.executable, "-m", "sigma_studio.cli", *args, "--out", str(tmp_path / "one.png")],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stderr
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "sigma_studio.cli", *args, "--out", str(tmp_path / "two.png")]  # fmt: skip
    two = subprocess.run(run, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "two.png"]  # rank 1 wrote nothing
    a, b = (np.asarray(Image.open(tmp_path / n), dtype=np.int16) for n in ("one.png", "two.png"))
    assert np.abs(a - b).max() <= 1  # the same latents up to float rounding
