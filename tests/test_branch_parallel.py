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
