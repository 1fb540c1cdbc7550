"""The GPU check's script at toy scale on the CPU path: every part runs in its own process and reports.

Slow (about 40 s): ``pytest -m slow tests/test_bench_device.py``.
"""

from __future__ import annotations

import pytest

from sigma_studio.cli.bench.device import PARTS, device_suite


@pytest.mark.slow
def test_every_part_runs_at_toy_scale(tmp_path):
    report = device_suite(tmp_path, "toy")
    assert set(report["parts"]) == set(PARTS)
    assert all(part["status"] == "ok" for part in report["parts"].values()), report["parts"]
    assert report["parts"]["bf16"]["result"]["relative_error"]["mid"] < 0.03
    assert (tmp_path / "device.json").is_file()
