"""One rank of ``sigma bench --suite train-memory``, started by ``train_memory`` under torchrun:

    python -m sigma_studio.cli.bench.train_memory_rank ROOT LOAD OUT

It sets up the finetune, trains one step and saves, and writes ``OUT/rank-N.json`` with its peak resident memory
after each of the three. A module of its own so that a rank loads only the trainer, nothing of the suite.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

from sigma_studio.finetune.config import TrainConfig
from sigma_studio.finetune.trainer import Trainer
from sigma_studio.model.files import write_json


def worker(root: Path, load: str, out: Path) -> None:
    """One rank: this process's peak resident memory after the setup (the load and sharding), after one
    training step, and after the checkpoint save."""
    rank = int(os.environ.get("RANK", "0"))
    cfg = TrainConfig(
        out=str(root / f"run-{load}"), dataset=str(root / "data" / "train"), model=str(root / "model"), steps=1,
        max_tokens=512, save_every=0, held_out=0.0, tensorboard=False, sharded_load=load == "sharded",
    )  # fmt: skip
    trainer = Trainer(cfg)
    trainer.setup()
    peaks = {"setup": _peak_gib()}
    samples, _ = next(trainer.batches())
    trainer.train_step(samples)
    peaks["step"] = _peak_gib()
    trainer.save()
    peaks["save"] = _peak_gib()
    write_json(out / f"rank-{rank}.json", {"rank": rank, "peak_gib": peaks})


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # Linux reports kilobytes


if __name__ == "__main__":
    worker(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
