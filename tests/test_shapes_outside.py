"""The outside check's rows (model.shapes.outside): another renderer, drawn from the written rules alone, whose
targets the pixel reader reads as the world's, whose rows are held-out pairs in the world's sentence forms, and
which ``sigma shapes eval --drawn-by opencv`` scores like the world's own rows."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from sigma_studio.cli.main import app
from sigma_studio.model.data.sigmagen import PRECISIONS, SigmaGenOptions
from sigma_studio.model.data.sigmagen import rows as sigmagen_rows
from sigma_studio.model.shapes.draws import HELD_OUT
from sigma_studio.model.shapes.evaluate import eval_files, score
from sigma_studio.model.shapes.outside import draw, make_outside, outside_rows
from sigma_studio.model.shapes.reader import read
from sigma_studio.model.shapes.scenes import shapes_scenes
from sigma_studio.model.shapes.sigmagen_eval import score_scene, summarise
from sigma_studio.model.shapes.tasks import FAMILIES
from sigma_studio.model.shapes.world import SHAPES, Thing, render

ROWS = 24


@pytest.fixture(scope="module")
def rows():
    return {family: outside_rows(family, ROWS) for family in FAMILIES}


def test_the_reader_reads_every_target_it_draws(rows):
    for family, examples in rows.items():
        verdicts = [score(ex.images[-1], ex.meta, family) for ex in examples]
        assert all(v["ok"] for v in verdicts), (family, [v for v in verdicts if not v["ok"]][:2])


def test_its_pictures_are_not_the_worlds_pixels():
    """Another renderer: the same shape in the same box reads the same, but its edge pixels differ."""
    box = (12.3, 12.3, 38.0, 38.0)
    for shape in SHAPES:
        ours, world = draw([(shape, "red", box)]), render([Thing(shape, "red", box)])
        assert read(ours).shape == read(world).shape == shape
        diff = np.abs(np.asarray(ours, np.int16) - np.asarray(world, np.int16)).max(axis=2)
        assert diff.max() > 20, shape  # edges drawn another way
        assert (diff > 20).mean() < 0.1, shape  # and still the same picture


def test_rows_are_held_out_pairs_and_no_reference_shows_one(rows):
    for family, examples in rows.items():
        assert len(examples) == ROWS
        for ex in examples:
            assert (ex.meta["shape"], ex.meta["colour"]) in HELD_OUT
            if family == "select":  # the named object is the held-out pair, every other one a training pair
                named = [o for o in ex.meta["objects"] if (o[0], o[1]) in HELD_OUT]
                assert [o[:2] for o in named] == [[ex.meta["shape"], ex.meta["colour"]]]
                assert ex.meta["source"] == named[0][2]
            elif family == "compose":  # references of training pairs only
                assert all((read(ref).shape, read(ref).colour) not in HELD_OUT for ref in ex.images[:2])


def test_compose_draws_one_references_shape_in_the_others_colour_and_the_swap(rows):
    compose = rows["compose"]
    worded = set()
    for first, second in zip(compose[::2], compose[1::2], strict=True):
        assert first.meta["swap"] == second.meta["swap"]
        assert first.meta["shape"] != second.meta["shape"] and first.meta["colour"] != second.meta["colour"]
        for ex in (first, second):
            s = int(re.search(r"<subject>shape <image_(\d)>", ex.instruction).group(1))
            c = int(re.search(r"colour of <image_(\d)>", ex.instruction).group(1))
            assert {s, c} == {1, 2}
            assert read(ex.images[s - 1]).shape == ex.meta["shape"]
            assert read(ex.images[c - 1]).colour == ex.meta["colour"]
            worded.add(ex.instruction.split()[0])
    assert worded == {"Draw", "Use"}  # the world's two sentences


def test_rows_are_a_pure_function_of_the_seed():
    again = outside_rows("select", 6, seed=3)
    assert [ex.meta for ex in again] == [ex.meta for ex in outside_rows("select", 6, seed=3)]
    assert [ex.meta for ex in again] != [ex.meta for ex in outside_rows("select", 6, seed=4)]


def test_the_world_renderer_draws_the_same_rows_in_its_own_pixels(rows):
    ours = outside_rows("layout", 6)
    world = outside_rows("layout", 6, renderer="world")
    assert [ex.meta for ex in ours] == [ex.meta for ex in world]
    assert all(a.images[-1].tobytes() != b.images[-1].tobytes() for a, b in zip(ours, world, strict=True))
    assert all(score(ex.images[-1], ex.meta, "layout")["ok"] for ex in world)
    with pytest.raises(ValueError, match="renderer is one of opencv, world"):
        outside_rows("text", 1, renderer="paint")


def test_make_outside_writes_what_the_evaluation_reads(tmp_path):
    counts = make_outside(tmp_path, 4)
    assert counts == {f"eval/{family}": 4 for family in FAMILIES}
    assert len(eval_files(tmp_path / "eval")) == len(FAMILIES)
    assert json.loads((tmp_path / "world.json").read_text())["drawn_by"] == "opencv"


def test_sigma_shapes_eval_drawn_by_opencv(tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(
        app,
        ["shapes", "eval", "--drawn-by", "opencv", "--reconstruct", "--per-family", "2", "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "drawn by OpenCV" in result.output
    report = json.loads(out.read_text())
    assert report["drawn_by"] == "opencv"
    assert {r["family"] for r in report["rows"]} == set(FAMILIES)


def test_drawn_by_with_data_is_one_clear_line(tmp_path):
    result = CliRunner().invoke(app, ["shapes", "eval", "--drawn-by", "opencv", "--data", str(tmp_path)])
    assert result.exit_code != 0
    assert "leave out --data" in " ".join(result.output.replace("│", " ").split())
    assert "Traceback" not in result.output


def test_sigmagen_scenes_drawn_by_opencv_are_the_worlds_scenes_in_other_pixels():
    world = list(shapes_scenes(4, seed=5, subjects=(3, 3)))
    ours = list(shapes_scenes(4, seed=5, subjects=(3, 3), drawn_by="opencv"))
    for a, b in zip(world, ours, strict=True):
        assert a.extra == b.extra and a.caption == b.caption  # the same things, boxes and layers
        assert a.image.tobytes() != b.image.tobytes()  # drawn another way
    with pytest.raises(ValueError, match="drawn_by is one of world, opencv"):
        shapes_scenes(1, drawn_by="paint")


def test_the_scene_reader_reads_opencv_scenes_right():
    records = []
    for n in (2, 3, 5):
        opts = SigmaGenOptions(channel_drop=0.0, seed=80 + n, max_subjects=n, precision=PRECISIONS, tile=32)
        for ex in sigmagen_rows(shapes_scenes(4, seed=80 + n, subjects=(n, n), drawn_by="opencv"), opts, {}):
            records.append({"meta": ex.meta, "verdict": score_scene(ex.images[-1], ex.meta["layers"], meta=ex.meta)})
    truth = summarise(records)["all"]
    assert truth["right"] == 1.0 and truth["extras"] == 0 and truth["subjects"] >= 30, truth


def test_sigma_sigmagen_eval_drawn_by_opencv(tmp_path):
    out = tmp_path / "sg.json"
    args = ["sigmagen", "eval", "--model", "shapes", "--drawn-by", "opencv", "--reconstruct", "--per-count", "1"]
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["drawn_by"] == "opencv" and report["summary"]["all"]["scenes"] == 4
    refused = CliRunner().invoke(app, ["sigmagen", "eval", "--model", "shapes", "--drawn-by", "opencv", "--data", "x"])
    assert refused.exit_code != 0 and "leave out --data" in " ".join(refused.output.replace("│", " ").split())
