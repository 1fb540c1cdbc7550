"""``sigma eval`` on a ``sigma batch`` folder of the shipped shapes model, offline: the tables, the files, the
comparison of two runs with a bootstrap interval, the benchmark path, and a metric whose model is missing."""

from __future__ import annotations

import csv
import json

import pytest

from sigma_studio.cli.main import main

OFFLINE = "shapes,psnr,ssim"


def sigma(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Shapes-world held-out rows (2 per family), generated twice: at 8 steps and at 3 steps."""
    root = tmp_path_factory.mktemp("eval")
    with pytest.raises(SystemExit):
        main(["shapes", "make", "--out", str(root / "data"), "--rows", "10", "--eval-rows", "2"])
    for name, steps in (("good", "8"), ("rough", "3")):
        with pytest.raises(SystemExit):
            main(["batch", str(root / "data" / "eval"), "--out", str(root / name), "--model", "shapes",
                  "--steps", steps])  # fmt: skip
    return root


def test_eval_writes_tables_per_family(capsys, runs):
    code, out, err = sigma(capsys, "eval", runs / "good", "--metrics", OFFLINE)
    assert code == 0, err
    data = json.loads((runs / "good" / "metrics.json").read_text())
    assert set(data["families"]) == {"background", "compose", "layout", "select", "text"}
    assert 0.0 <= data["overall"]["shapes"] <= 1.0 and data["overall"]["psnr"] > 5
    assert all(m["mirrors"] for m in data["metrics"])
    rows = list(csv.DictReader((runs / "good" / "metrics.csv").open()))
    assert len(rows) == 10 and set(rows[0]) == {"row_id", "family", "shapes", "psnr", "ssim"}
    assert "compose" in out and "all" in out and "PSNR" in out


def test_compare_shows_the_difference_with_an_interval(capsys, runs):
    code, out, err = sigma(capsys, "eval", runs / "rough", "--metrics", OFFLINE, "--compare", runs / "good")
    assert code == 0, err
    assert "B - A" in out and "95 % CI" in out


def test_a_metric_without_its_model_is_one_line_and_the_others_run(capsys, runs, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    code, out, err = sigma(capsys, "eval", runs / "good", "--metrics", "clip_t,psnr", "--cache-dir", tmp_path)
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: clip_t") and "Traceback" not in err
    assert "PSNR" in out


def test_benchmark_runs_batch_then_metrics(capsys, runs):
    out_dir = runs / "bench"
    code, out, err = sigma(capsys, "eval", out_dir, "--benchmark", runs / "data" / "eval", "--model", "shapes",
                           "--limit", "3", "--metrics", OFFLINE)  # fmt: skip
    assert code == 0, err
    assert len(json.loads((out_dir / "metrics.json").read_text())["rows"]) == 3


def test_bad_eval_input(capsys, tmp_path):
    code, _, err = sigma(capsys, "eval", tmp_path / "nothing")
    assert code == 2 and "is not a folder" in err
    code, _, err = sigma(capsys, "eval", tmp_path, "--metrics", "psnrr")
    assert code == 2 and "--metrics psnrr is unknown" in err


def test_compare_with_a_broken_report_is_one_line(capsys, runs, tmp_path):
    """--compare reads the other run's metrics.json: a truncated one is a one-line error naming it, not a traceback."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(runs / "good", other)
    report = other / "metrics.json"
    report.write_text(report.read_text()[:40])
    code, _, err = sigma(capsys, "eval", runs / "rough", "--metrics", OFFLINE, "--compare", other)
    assert code != 0 and "Traceback" not in err
    assert f"{report} is unreadable" in err and "delete it to score that run again" in err
