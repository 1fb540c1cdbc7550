"""``sigma bench --suite train-memory``: the peak memory of each rank of a distributed finetune, with every rank
loading the whole model first (``--full-load``, how training started before) and with each rank reading only its
shard of the weights file after FSDP2 sharding (``--sharded-load``, the default).

Two CPU processes under torchrun (gloo) set up a finetune of a mid-size random model (274 M parameters, 1.0 GiB in
float32), train one step and save a checkpoint; each rank writes its peak resident set size (``ru_maxrss``) after
each of the three. At 7B the float32 model is about 57 GB, so the full load costs that on every rank of a node
before sharding.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

LOADS = ("full", "sharded")


def train_memory_suite(ranks: int = 2) -> dict:
    """Both loads in turn, ``ranks`` processes each; returns the per-rank peaks and the model's size."""
    with tempfile.TemporaryDirectory(prefix="sigma-train-memory-") as tmp:
        root = Path(tmp)
        params = _write_inputs(root)
        report: dict = {"ranks": ranks, "params_m": params / 1e6, "float32_gib": params * 4 / 2**30, "loads": {}}
        for load in LOADS:
            report["loads"][load] = _run(root, load, ranks)
    return report


def _arch():

    from .bench_layouts import mid

    base = mid()
    llm = dataclasses.replace(base.llm, hidden_size=1024, num_layers=12, intermediate_size=2816, num_heads=8)
    return base.replace(llm=llm)


def _write_inputs(root: Path) -> int:
    """A random mid-size checkpoint and a few shapes-world rows to train on; returns the parameter count."""
    import torch

    from sigma_studio.model.arch.autoencoder import AutoEncoder
    from sigma_studio.model.loader import fresh_model, write_model_dir
    from sigma_studio.model.shapes.tasks import make_world
    from sigma_studio.model.tokens import Tokenizer

    arch = _arch()
    model = fresh_model(arch, seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        vae = AutoEncoder(arch.vae)
    state = {"ema.safetensors": model.state_dict(), "ae.safetensors": vae.state_dict()}
    write_model_dir(root / "model", arch, Tokenizer.byte_level(), state)
    make_world(root / "data", rows=16, eval_rows=1)
    return sum(p.numel() for p in model.parameters())


def _run(root: Path, load: str, ranks: int) -> dict:
    out = root / f"peaks-{load}"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
           "-m", "sigma_studio.cli.bench_train_memory", str(root), load, str(out)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode:
        return {"error": done.stderr.strip()[-800:]}
    peaks = [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json"))]
    return {"peak_gib_per_rank": [p["peak_gib"] for p in peaks]}


def _worker(root: Path, load: str, out: Path) -> None:
    """One rank: this process's peak resident memory after the setup (the load and sharding), after one
    training step, and after the checkpoint save."""
    from sigma_studio.finetune.config import TrainConfig
    from sigma_studio.finetune.trainer import Trainer

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
    (out / f"rank-{rank}.json").write_text(json.dumps({"rank": rank, "peak_gib": peaks}))


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # Linux reports kilobytes


if __name__ == "__main__":  # one rank: python -m sigma_studio.cli.bench_train_memory ROOT LOAD OUT
    _worker(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
