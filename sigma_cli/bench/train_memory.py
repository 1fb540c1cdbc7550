"""``sigma bench --suite train-memory``: the peak memory of each rank of a distributed finetune, with every rank
loading the whole model first (``--full-load``, how training started before) and with each rank reading only its
shard of the weights file after FSDP2 sharding (``--sharded-load``, the default).

Two CPU processes under torchrun (gloo) set up a finetune of a mid-size random model (274 M parameters, 1.0 GiB in
float32), train one step and save a checkpoint; each rank (``train_memory_rank``) writes its peak resident set size
(``ru_maxrss``) after each of the three. At 7B the float32 model is about 57 GB, so the full load costs that on
every rank of a node before sharding.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from sigma_studio.model.arch.autoencoder import AutoEncoder
from sigma_studio.model.config import ArchConfig
from sigma_studio.model.request.tokens import Tokenizer
from sigma_studio.model.shapes.tasks import make_world
from sigma_studio.model.weights.loader import fresh_model, write_model_dir

from .weights import mid

LOADS = ("full", "sharded")
RANK_MODULE = "sigma_studio.cli.bench.train_memory_rank"


def train_memory_suite(ranks: int = 2) -> dict:
    """Both loads in turn, ``ranks`` processes each; returns the per-rank peaks and the model's size."""
    with tempfile.TemporaryDirectory(prefix="sigma-train-memory-") as tmp:
        root = Path(tmp)
        params = _write_inputs(root)
        report: dict = {"ranks": ranks, "params_m": params / 1e6, "float32_gib": params * 4 / 2**30, "loads": {}}
        for load in LOADS:
            report["loads"][load] = _run(root, load, ranks)
    return report


def _arch() -> ArchConfig:
    base = mid()
    llm = dataclasses.replace(base.llm, hidden_size=1024, num_layers=12, intermediate_size=2816, num_heads=8)
    return base.replace(llm=llm)


def _write_inputs(root: Path) -> int:
    """A random mid-size checkpoint and a few shapes-world rows to train on; returns the parameter count."""
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
           "-m", RANK_MODULE, str(root), load, str(out)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode:
        return {"error": done.stderr.strip()[-800:]}
    peaks = [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json"))]
    return {"peak_gib_per_rank": [p["peak_gib"] for p in peaks]}
