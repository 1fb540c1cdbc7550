"""The quality guard: a fixed slice of the shapes model's held-out evaluation, on the shipped model, against the
figures docs/SHAPES.md states for the same slice ("The quality guard"). Every speed or refactoring change must keep
each figure within MARGIN of the page; a change that moves them on purpose updates the page's table with them.

The slice: 8 held-out rows of each of the five SIGMA families (``make_world(rows=10, eval_rows=8)``) and, for a
model trained on SIGMA-GEN's subjects (its ``skills``), 4 held-out scenes of each subject count 2-5
(``make_eval(per_count=4, seed=0)``), generated at 20 sampler steps, read by the strict pixel readers
(model/shapes/evaluate.py, model/shapes/scene_reader.py).
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import pytest

from sigma_studio.model import GenerationConfig, load_pipeline

PAGE = Path(__file__).resolve().parents[1] / "docs" / "SHAPES.md"
MARKER = "<!-- quality-guard: tests/test_shapes_guard.py reads this table -->"
MARGIN = Fraction(1, 8)  # one row in eight: the figures below may fall this far (12.5 points) and no further
FAST = GenerationConfig(steps=20)
FAMILIES = ("compose", "select", "layout", "background", "text")
COUNTS = ("2", "3", "4", "5")


def page_figures() -> dict[str, Fraction]:
    """The guard's table on docs/SHAPES.md: slice name -> the share right, written as ``k/n``."""
    text = PAGE.read_text(encoding="utf-8")
    assert MARKER in text, f"{PAGE} has lost its quality-guard table"
    lines = text.split(MARKER, 1)[1].strip().splitlines()
    figures = {}
    for line in lines[2:]:  # after the header and its rule
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        found = re.search(r"(\d+)\s*/\s*(\d+)", cells[2])
        assert found, f"guard row {line!r}: the third cell must read k/n"
        figures[cells[0]] = Fraction(int(found[1]), int(found[2]))
    return figures


@pytest.fixture(scope="module")
def shapes_pipe():
    return load_pipeline("shapes")


def guarded(pipe) -> set[str]:
    """The slices the shipped model is guarded on: the five families, and SIGMA-GEN's counts once it learnt them."""
    return {*FAMILIES, *(f"sigmagen {n}" for n in COUNTS if "subjects" in (pipe.arch.skills or ()))}


@pytest.fixture(scope="module")
def measured(shapes_pipe, tmp_path_factory) -> dict[str, Fraction]:
    from sigma_studio.finetune.sigmagen_recipe import make_eval
    from sigma_studio.model.shapes.evaluate import evaluate_pipeline
    from sigma_studio.model.shapes.sigmagen_eval import evaluate_sigmagen
    from sigma_studio.model.shapes.tasks import make_world

    pipe, folder = shapes_pipe, tmp_path_factory.mktemp("guard")
    make_world(folder, rows=10, eval_rows=8)
    _, rows = evaluate_pipeline(pipe, folder / "eval", per_family=8, families=FAMILIES, config=FAST)
    out = {}
    for family in FAMILIES:
        verdicts = [r["verdict"]["ok"] for r in rows if r["family"] == family]
        out[family] = Fraction(sum(verdicts), len(verdicts))
    if not guarded(pipe) - set(FAMILIES):
        return out
    make_eval(folder / "sigmagen", 4, 0, pipe.arch.routing_step, pipe.arch.sheet_rows)
    _, scenes = evaluate_sigmagen(pipe, folder / "sigmagen", config=FAST)
    for n in COUNTS:
        subjects = [s["ok"] for r in scenes if len(r["meta"]["layers"]) == int(n)
                    for s in r["verdict"]["subjects"] if s["scored"]]  # fmt: skip
        out[f"sigmagen {n}"] = Fraction(sum(subjects), len(subjects))
    return out


def test_the_page_states_a_figure_for_every_slice(shapes_pipe):
    assert set(page_figures()) == guarded(shapes_pipe)


@pytest.mark.parametrize("name", [*FAMILIES, *(f"sigmagen {n}" for n in COUNTS)])
def test_the_shipped_model_keeps_its_figure(shapes_pipe, measured, name):
    if name not in guarded(shapes_pipe):
        pytest.skip(f"the shipped model was not trained for {name}: nothing to guard")
    stated, now = page_figures()[name], measured[name]
    assert now >= stated - MARGIN, (
        f"{name}: {float(now):.0%} right on the guard's slice, docs/SHAPES.md states {float(stated):.0%} "
        f"(at most {float(MARGIN):.1%} lower passes)"
    )
