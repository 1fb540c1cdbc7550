"""``--offcentre``: a share of compose's and layout's training rows show the reference's object anywhere on its
canvas, so that no copy in place can stand for the move their targets ask (docs/SHAPES.md, "References anywhere").
Only the reference's place changes: the row's words, shapes, colours, sizes and target are the centred row's."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sigma_studio.cli.main import app
from sigma_studio.finetune.shapes_config import ShapesRecipe
from sigma_studio.finetune.shapes_stages import make_data
from sigma_studio.model.errors import InputError
from sigma_studio.model.shapes.evaluate import read
from sigma_studio.model.shapes.tasks import FAMILIES, LOOSE_FAMILIES, examples, make_world, row_key


def _keys(family: str, split: str, **kw) -> list[bytes]:
    return [row_key(ex) for ex in examples(family, split, 12, seed=3, **kw)]


def test_only_the_loose_families_training_references_move():
    for family in FAMILIES:
        assert _keys(family, "train", offcentre=0.0) == _keys(family, "train")  # an unchanged world
        assert _keys(family, "eval", offcentre=1.0) == _keys(family, "eval")  # the evaluation never moves
        if family not in LOOSE_FAMILIES:
            assert _keys(family, "train", offcentre=1.0) == _keys(family, "train")
    for family in LOOSE_FAMILIES:
        moved = 0
        centred = list(examples(family, "train", 12, seed=3))
        for plain, loose in zip(centred, examples(family, "train", 12, seed=3, offcentre=1.0), strict=True):
            assert loose.meta.pop("offcentre") is True and loose.meta == plain.meta
            assert loose.instruction == plain.instruction
            assert loose.images[-1].tobytes() == plain.images[-1].tobytes()  # the target stays where it was
            for before, after in zip(plain.images[:-1], loose.images[:-1], strict=True):
                was, now = read(before), read(after)
                assert (now.shape, now.colour, now.background) == (was.shape, was.colour, was.background)
                if was.centroid is not None:  # (the layout's box map is the same picture: it never counts)
                    moved += max(abs(a - b) for a, b in zip(was.centroid, now.centroid, strict=True)) > 2
                    left, top, w, h = now.box
                    assert left >= 0 and top >= 0 and left + w <= 64 and top + h <= 64  # whole, on the canvas
        assert moved >= 8  # of 12 references (compose: 12 rows of 2, the pairs sharing theirs), most stand elsewhere


def test_the_share_is_recorded_and_checked_before_anything_is_written(tmp_path):
    make_world(tmp_path / "w", rows=40, eval_rows=2, seed=1, offcentre=0.5)
    assert json.loads((tmp_path / "w" / "world.json").read_text())["offcentre"] == 0.5
    with pytest.raises(InputError, match="between 0 and 1"):
        make_world(tmp_path / "bad", rows=20, eval_rows=2, offcentre=1.5)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(InputError, match="--offcentre"):
        ShapesRecipe(out=str(tmp_path / "run"), offcentre=-0.1)
    bad = CliRunner().invoke(app, ["shapes", "make", "--out", str(tmp_path / "x"), "--offcentre", "2"])
    assert bad.exit_code != 0 and "between 0 and 1" in " ".join(bad.output.split()) and "Traceback" not in bad.output
    assert not (tmp_path / "x").exists()


def test_the_recipe_draws_its_data_with_the_share(tmp_path):
    recipe = ShapesRecipe(out=str(tmp_path / "run"), rows=20, eval_rows=2, sigmagen_rows=0, offcentre=1.0)
    make_data(recipe)
    world = json.loads((tmp_path / "run" / "data" / "world.json").read_text())
    assert world["offcentre"] == 1.0
