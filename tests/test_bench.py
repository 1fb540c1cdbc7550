"""The benchmark's code path at toy scale on the CPU (the 7B figures need a GPU: ``sigma bench``)."""

from __future__ import annotations

import json

from sigma_studio.cli.bench.flops import step_flops
from sigma_studio.cli.bench.modes import benchmark
from sigma_studio.model.presets import bagel_7b_mot


def test_benchmark_runs_at_tiny_scale(tmp_path):
    report = benchmark("tiny", ["cpu"], "cpu", 64, 4, tmp_path / "bench.json", None)
    assert not report["errors"], report["errors"]
    cases = {r["case"]: r for r in report["results"]}
    assert set(cases) == {"a", "b"}
    assert all(r["seconds"] > 0 and r["tflop"] > 0 for r in cases.values())
    assert len(cases["b"]["context_tokens"]) == 3  # full, text-dropped and image-dropped contexts all run
    assert report["equivalence_rel_error"]["cpu"] < 1e-5  # batched branches compute the plain path's function
    assert json.loads((tmp_path / "bench.json").read_text())["preset"] == "tiny"


def test_flop_count_matches_the_perf_notes():
    """PERF_NOTES: one generation-expert forward over 4,098 query tokens is about 53.5 TFLOP of linear layers
    plus attention; three SIGMA branches (16.4K, 16.4K, ~0.1K cached keys) about 221 TFLOP per step."""
    arch = bagel_7b_mot()
    per_step = step_flops(arch, 4096, [16400, 16400, 100])
    assert 215e12 < per_step < 240e12  # 221 without the query attending to itself; 235 with it
