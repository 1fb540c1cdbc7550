"""The GPU check's script at toy scale on the CPU path: every part runs in its own process and reports.

Slow (a few minutes: the compiled path compiles on the CPU): ``pytest -m slow tests/test_bench_device.py``.
"""

from __future__ import annotations

import pytest

from sigma_studio.cli.bench.device import PARTS, device_suite


@pytest.mark.slow
def test_every_part_runs_at_toy_scale(tmp_path):
    report = device_suite(tmp_path, "toy", PARTS)
    parts = report["parts"]
    assert set(parts) == set(PARTS)
    assert all(part["status"] == "ok" for part in parts.values()), parts
    assert parts["bf16"]["result"]["relative_error"]["mid"] < 0.03
    results = parts["cases"]["result"]["results"]
    # on the CPU: exact, compile (cold, warm), fast, fast+compile, forecast+compile; each case timed
    names = {"exact", "compile (cold)", "compile", "fast", "fast+compile", "forecast3+compile"}
    assert {k.rsplit("/", 1)[0] for k in results} == names
    assert all(isinstance(r, dict) and r["seconds"] > 0 for r in results.values()), results
    assert parts["cases"]["result"]["batched_vs_plain_rel_error"] < 1e-5
    profile = parts["profile"]["result"]
    assert len(profile["top_kernels"]) == 15 and set(profile["branches"]) == {"1", "2", "3"}
    assert (tmp_path / "profile-trace.json.gz").is_file()
    assert [r["requests"] for r in parts["throughput"]["result"]["rows"]] == [1, 2, 4]
    assert all(r["max_rel_error"] < 1e-4 for r in parts["throughput"]["result"]["rows"])
    assert "skipped" in parts["fp8"]["result"]
    assert (tmp_path / "device.json").is_file()


def test_a_part_cut_short_mid_write_still_reports(tmp_path, monkeypatch):
    """A part whose report was cut mid-write (a part killed at its timeout, before reports were atomic) is recorded
    as unreadable, and the parts after it still run; device.json is whole."""
    import json
    import subprocess

    from sigma_studio.cli.bench import device

    def fake_run(cmd, **kwargs):
        part, path = cmd[3], cmd[4]
        with open(path, "w") as f:
            f.write('{"cut": ' if part == PARTS[0] else '{"ok": 1}')
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(device.subprocess, "run", fake_run)
    report = device_suite(tmp_path, "toy", PARTS[:2])
    first, second = (report["parts"][p] for p in PARTS[:2])
    assert first["result"] is None and first["status"] == "ok (its report is unreadable)"
    assert second == {"status": "ok", "seconds": second["seconds"], "result": {"ok": 1}}
    assert json.loads((tmp_path / "device.json").read_text())["parts"].keys() == set(PARTS[:2])
