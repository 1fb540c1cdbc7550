"""examples/shapes_plan_read.py: a think-mode select probe's plans, scored by their form against each row's target;
rows read before select kept its source are drawn again from their world's seed and matched by picture."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from sigma_studio.model.shapes.auxiliary import place_words
from sigma_studio.model.shapes.tasks import make_world

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "shapes_plan_read.py"
sys.path.insert(0, str(SCRIPT.parent))
from shapes_plan_read import plan_verdict  # noqa: E402


def test_each_form_is_scored_against_the_target():
    meta = {"shape": "star", "colour": "red", "source": [2, 2, 10, 10]}
    assert plan_verdict("colour", meta, " the star is red ") == {"plan": True}
    assert plan_verdict("colour", meta, "the star is blue") == {"plan": False}
    assert plan_verdict("place", meta, "the star is at the top left") == {"plan": True}
    assert plan_verdict("place", meta, "the star is in the middle") == {"plan": False}
    assert plan_verdict("scene", meta, "the circle is blue and the star is red") == {"plan": True, "entry": True}
    assert plan_verdict("scene", meta, "the star is blue and the circle is red") == {"plan": False, "entry": False}
    then = "the circle is blue and the star is red, so the star is "
    assert plan_verdict("scene+colour", meta, then + "red") == {"plan": True, "entry": True}
    assert plan_verdict("scene+colour", meta, then + "blue") == {"plan": False, "entry": True}


def test_a_probe_read_without_sources_is_scored_from_its_rows_drawn_again(tmp_path):
    make_world(tmp_path / "data" / "eval", rows=10, eval_rows=6, seed=3)
    table = pq.read_table(tmp_path / "data" / "eval" / "eval" / "select.parquet").to_pylist()
    rows = []
    for i, rec in enumerate(table):
        meta = json.loads(rec["meta"])
        right_plan = f"the {meta['shape']} is {place_words(meta['source'], 64)}"
        plan = right_plan if i < 4 else "the star is nowhere"  # four plans right
        rows.append({"family": "select", "row": i, "meta": {k: v for k, v in meta.items() if k != "source"},
                     "verdict": {"ok": i in (0, 4)}, "plan": plan})  # fmt: skip
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "eval.json").write_text(json.dumps({"rows": rows}))
    args = [sys.executable, str(SCRIPT), str(tmp_path / "run"), "place", "--data", str(tmp_path / "data")]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| held-out pairs | 6 | 2 | 4 | 1 of 4 |" in out.stdout.splitlines()
    missing = subprocess.run([*args[:2], str(tmp_path / "none"), "colour"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no eval.json or seen.json yet" in missing.stderr


def test_reads_it_cannot_score_are_refused_in_one_line_before_any_table(tmp_path):
    make_world(tmp_path / "data" / "eval", rows=10, eval_rows=3, seed=3)
    meta = {"shape": "star", "colour": "red"}
    cases = {
        "no row has a plan; was it read with --think?": [{"family": "select", "row": 0, "meta": meta,
                                                          "verdict": {"ok": True}}],
        "is past the 3 select rows": [{"family": "select", "row": 7, "meta": meta, "verdict": {"ok": True},
                                       "plan": "the star is in the middle"}],
        "select row 0 has no verdict": [{"family": "select", "row": 0, "meta": meta, "plan": "x"}],
        "no select rows": [{"family": "text", "row": 0, "meta": meta, "verdict": {"ok": True}, "plan": "x"}],
    }  # fmt: skip
    for said, rows in cases.items():
        run = tmp_path / "run"
        run.mkdir(exist_ok=True)
        (run / "eval.json").write_text(json.dumps({"rows": rows}))
        args = [sys.executable, str(SCRIPT), str(run), "place", "--data", str(tmp_path / "data")]
        out = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert out.returncode == 1 and said in out.stderr and out.stdout == "", (said, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1
