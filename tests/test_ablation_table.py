"""examples/shapes_ablation_table.py: the ablation's figures per arm, each seed, their mean and spread, and each mask
arm against off seed by seed; a half-finished ablation prints what it has."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "shapes_ablation_table.py"
FAMILIES = ("compose", "select", "layout", "background", "text")


def write(folder: Path, run: str, compose: float, select: float, swap: float = 0.5) -> None:
    summary = {f: {"n": 100, "accuracy": 0.5} for f in FAMILIES}
    summary["compose"] = {"n": 100, "accuracy": compose, "swap_consistency": swap}
    summary["select"] = {"n": 100, "accuracy": select}
    (folder / run).mkdir(parents=True)
    (folder / run / "eval.json").write_text(json.dumps({"model": run, "summary": summary, "rows": []}))


def run(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(folder)], capture_output=True, text=True, timeout=120)


def test_means_spread_and_differences(tmp_path):
    write(tmp_path, "eq9-seed0", 0.80, 0.20, swap=0.60)
    write(tmp_path, "eq9-seed1", 0.70, 0.30, swap=0.40)
    write(tmp_path, "off-seed0", 0.75, 0.10)
    write(tmp_path, "off-seed1", 0.65, 0.30)
    (tmp_path / "intent-seed0" / "train").mkdir(parents=True)  # started, not evaluated
    (tmp_path / "eval-tokens").mkdir()  # the shared held-out rows: not an arm
    out = run(tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    eq9 = next(line for line in lines if "eq. 9 as written |" in line)
    cells = [c.strip() for c in eq9.strip("|").split("|")]
    assert cells[:3] == ["on", "eq. 9 as written", "0, 1"]
    assert cells[3] == "75 % (80/70)" and cells[4] == "25 % (20/30)"  # compose, select: mean (each seed)
    assert cells[8] == "50 % (60/40)"  # compose with both token orders right
    assert cells[9] == "10 points"  # the largest spread between seeds, over the families
    intent = next(line for line in lines if "Fig. 2's intent |" in line)
    assert "| none |" in intent and "—" in intent
    diff = next(line for line in lines if line.startswith("- eq. 9 as written minus off"))
    assert "seed 0, 1" in diff and "compose +5/+5" in diff and "select +10/+0" in diff
    assert lines[-1] == "Not evaluated yet: intent-seed0"


def test_no_folder_is_a_clear_error(tmp_path):
    out = run(tmp_path / "absent")
    assert out.returncode != 0
    assert "No ablation folder" in out.stderr and "shapes_ablation.sh" in out.stderr


def test_the_ablation_script_refuses_bad_arguments_before_it_writes_anything(tmp_path):
    script = SCRIPT.parent / "shapes_ablation.sh"
    refusals = {  # a typo in an arm, arms not quoted as one argument, a seed and a step count that are no numbers
        ("10", "0", "eq9 intnet"): "unknown arm 'intnet'",
        ("10", "0", "eq9", "off"): "quote several",
        ("10", "0 1x", "eq9"): "SEEDS must be whole numbers, not '1x'",
        ("12k", "0", "eq9"): "STEPS must be a whole number of optimizer steps, not '12k'",
    }
    for args, said in refusals.items():
        out = subprocess.run(["bash", str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and said in out.stderr, out.stderr
        assert list(tmp_path.iterdir()) == []  # no base copied, no rows written
