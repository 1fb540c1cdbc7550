"""``sigma batch`` over several processes: --shard I/N job arrays and torchrun ranks (gloo on the CPU) share one
folder, every row is done exactly once, and the outputs are identical to a single-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from sigma_studio.cli.main import main
from sigma_studio.model.data.batch import Shard, read_records
from tests.test_batch import _parquet, _png

ROWS = [(f"Make it <style>like <image_1> number {k}", [_png(40, 56, k), _png(64, 48, 10 + k)]) for k in range(6)]
ARGS = ["--model", "tiny", "--steps", "2"]


def sigma(*args) -> int:
    """``sigma ARGS`` in this process, on one thread like each torchrun rank (float sums depend on the thread
    count, so bit-identical outputs need the same one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(SystemExit) as exit_:
            main([str(a) for a in args])
    finally:
        torch.set_num_threads(threads)
    return exit_.value.code


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    _parquet(folder / "shard.parquet", ROWS)
    return folder


@pytest.fixture(scope="module")
def single(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "out"
    assert sigma("batch", data, "--out", out, *ARGS) == 0
    return out


def outputs(folder) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png")) if not p.name.endswith(".gt.png")}


def assert_same_as_single(folder, single) -> None:
    ours, theirs = outputs(folder), outputs(single)
    assert sorted(ours) == sorted(theirs) and len(ours) == len(ROWS)
    assert all(np.array_equal(ours[name], theirs[name]) for name in ours)
    ids = [entry["row_id"] for entry in read_records(folder)]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == len(ROWS)  # every row exactly once
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["generated"] == len(ROWS) and summary["failed"] == 0


def test_the_split_is_stable_and_complete():
    ids = [f"shard-{k:06d}" for k in range(200)]
    parts = [Shard(i, 3) for i in range(3)]
    owners = [[p.index for p in parts if p.owns(r)] for r in ids]
    assert all(len(o) == 1 for o in owners) and {o[0] for o in owners} == {0, 1, 2}
    assert Shard.parse("2/3") == Shard(2, 3) and Shard().file("records") == "records.jsonl"
    assert Shard(1, 4).file("failures") == "failures.1of4.jsonl"


@pytest.mark.parametrize("bad", ["3/3", "a/2", "1", "-1/2"])
def test_bad_shards_are_one_line(bad, capsys, data, tmp_path):
    assert sigma("batch", data, "--out", tmp_path / "o", "--shard", bad, *ARGS) == 2
    assert "--shard" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_job_array_shards_cover_every_row_once(data, single, tmp_path):
    out = tmp_path / "out"
    for i in range(3):
        assert sigma("batch", data, "--out", out, "--shard", f"{i}/3", *ARGS) == 0
    assert sorted(p.name for p in out.glob("records*.jsonl")) == [f"records.{i}of3.jsonl" for i in range(3)]
    assert_same_as_single(out, single)
    assert sigma("batch", data, "--out", out, "--shard", "1/3", *ARGS) == 0  # a rerun resumes: nothing to redo
    assert_same_as_single(out, single)


def test_torchrun_ranks_share_the_rows(data, single, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29577",
           "-m", "sigma_studio.cli", "batch", str(data), "--out", str(out), *ARGS]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "all ranks done: 6 outputs, 0 failed" in result.stderr
    assert sorted(p.name for p in out.glob("records*.jsonl")) == ["records.0of2.jsonl", "records.1of2.jsonl"]
    assert_same_as_single(out, single)
