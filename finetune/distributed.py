"""torchrun environment, FSDP2 sharding and rank-0 helpers. One process without torchrun is world size 1."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init() -> Dist:
    """Join the process group when launched by torchrun (NCCL on GPUs, gloo on the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    return Dist(rank, world, local, device)


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules FSDP shards one by one: each decoder layer, and every other module our code calls directly.

    The pipeline and the packed forward call submodules (embeddings, norms, glue layers) rather than one
    ``model.forward``, so each of them must gather its own parameters in its own forward hook.
    """
    lm = model.language_model.model
    units = list(lm.layers)
    units += [m for m in (lm.embed_tokens, lm.norm, lm.norm_moe_gen, model.language_model.lm_head)]
    for name, child in model.named_children():
        if name != "language_model" and any(True for _ in child.parameters()):
            units.append(child)
    return units


def shard(model: nn.Module, d: Dist, bf16: bool) -> nn.Module:
    """FSDP2 (``fully_shard``) over :func:`shard_units`, then the root; bf16 compute, float32 reductions on GPUs."""
    if not d.enabled:
        return model
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    kwargs = {"mp_policy": mp} if mp is not None else {}
    for unit in shard_units(model):
        fully_shard(unit, **kwargs)
    fully_shard(model, **kwargs)
    return model


def fill_shards(model: nn.Module, deferred, device: torch.device) -> None:
    """Give a sharded meta-device model real storage on ``device`` and read each rank's rows of every parameter
    from the checked weights file (``model.weights.loader.DeferredWeights``): no rank ever holds the whole model.

    Parameters the file lacks are the ones added after loading, SIGMA's attribute vectors, which start at zero
    exactly as ``enable_attribute_projection`` makes them on a loaded model."""
    model.to_empty(device=device)
    added = {n for n, _ in model.named_parameters()} - deferred.keys
    if any(not n.startswith("attribute_embed.") for n in added):
        raise RuntimeError(f"the sharded load has no values for {sorted(added)[:3]}: load with --full-load")
    with torch.no_grad():
        for name, param in model.named_parameters():
            local = local_tensor(param)
            if name in added:
                local.zero_()
            elif hasattr(param, "device_mesh"):
                start, stop = shard_rows(param.shape[0], param.device_mesh.size(), param.device_mesh.get_local_rank())
                if local.shape[0] != stop - start:
                    raise RuntimeError(f"{name}: this rank holds {local.shape[0]} rows, expected {stop - start}")
                if stop > start:
                    local.copy_(deferred.reader.rows(name, start, stop))
            else:
                local.copy_(deferred.reader(name))


def shard_rows(rows: int, world: int, rank: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` FSDP2 gives ``rank``: dim 0 split as ``torch.chunk`` splits it."""
    per = -(-rows // world)
    start = min(rank * per, rows)
    return start, min(start + per, rows)


def local_shard(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a full tensor when ``like`` is a DTensor (FSDP2: rows split across ranks, in
    ``like``'s dtype), else the tensor itself on ``like``'s device."""
    if hasattr(like, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(like.dtype), like.device_mesh, like.placements)
    return full.to(like.device)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor (gathered from every rank), else ``t``."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a DTensor, else ``t``."""
    return t.to_local() if hasattr(t, "to_local") else t


def all_sum(value: float, d: Dist) -> float:
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=d.device if d.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return float(t.item())


def gather_objects(obj, d: Dist) -> list:
    if not d.enabled:
        return [obj]
    out = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def shutdown(d: Dist) -> None:
    """Leave the process group together: a rank that destroys its group (and exits) while a peer's gloo work is
    still in flight can abort that peer ("terminate called without an active exception", seen once in the
    two-rank CPU test), so every rank first waits for the others."""
    if d.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
