"""Guidance branches on several processes (GPUs): each evaluates some of a step's contexts, then all gather.

A SIGMA step evaluates up to three contexts (full, text-dropped, image-dropped) that do not depend on each other,
as xDiT's CFG parallelism observes for classifier-free guidance: with one process per GPU, rank ``r`` of ``W``
evaluates contexts ``r, r + W, ...`` of the step (in one batched forward when it has several), and
``all_gather`` gives every rank every velocity, so each rank then takes the same Euler step and holds the same
state. Every rank prefills every context (simple, and the prefill is a few percent of a generation); the
per-step work divides. ``torchrun --nproc-per-node 3 -m sigma_studio.cli generate ...`` does this from the CLI
(:func:`join_torchrun`); rank 0 writes the picture.

On an H200 the three contexts of case (b) take 164 ms alone (full), 162 ms (text-dropped, also 16K tokens) and
126 ms (image-dropped, 76 tokens) of a 452 ms step (docs/PERF.md): three GPUs would make a step about 2.8x
faster, two about 1.56x (full with image-dropped on one, text-dropped on the other; this module's round-robin
puts full and image-dropped together, the best split for that case).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch


def gather_velocities(
    evaluate: Callable[[list[int]], list[torch.Tensor]], count: int, like: torch.Tensor, group=None
) -> list[torch.Tensor]:
    """The velocities of ``count`` contexts, this rank evaluating its share through ``evaluate(indices)``.

    ``like``: a tensor with the velocities' shape, dtype and device (ranks without work this step send zeros)."""
    import torch.distributed as dist

    world, rank = dist.get_world_size(group), dist.get_rank(group)
    mine = list(range(rank, count, world))
    per_rank = -(-count // world)
    local = like.new_zeros((per_rank, *like.shape))
    if mine:
        local[: len(mine)] = torch.stack(evaluate(mine))
    gathered = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(gathered, local, group=group)
    return [gathered[i % world][i // world] for i in range(count)]


@dataclass(frozen=True)
class Shared:
    """This process's place among torchrun's processes sharing the guidance branches."""

    group: object  # the torch.distributed process group
    rank: int
    device: str | None  # cuda:LOCAL_RANK on GPUs; None on CPUs (the loader's default)


def join_torchrun() -> Shared | None:
    """Under ``torchrun --nproc-per-node N`` (``WORLD_SIZE`` > 1): join the default process group (NCCL on GPUs,
    gloo on CPUs) and say which GPU this rank drives; otherwise None (one process does everything)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Shared(dist.group.WORLD, dist.get_rank(), f"cuda:{local}" if cuda else None)
