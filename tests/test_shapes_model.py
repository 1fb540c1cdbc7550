"""The shipped ``shapes`` model: small, strictly loadable, and it does its job on held-out pairs.

These run the real pipeline (the trained layout, three guidance contexts, the group mask and the attribute
projection) on pictures drawn by the world's rules and read the outputs back by pixels.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sigma_studio.model import GenerationConfig, load_pipeline
from sigma_studio.model.hub import shipped_shapes_model
from sigma_studio.model.shapes.evaluate import evaluate_pipeline, read
from sigma_studio.model.shapes.tasks import make_world
from sigma_studio.model.shapes.world import centred, render

FAST = GenerationConfig(steps=20)  # fewer steps than the default 50, to keep CI quick


@pytest.fixture(scope="module")
def shapes_pipe():
    return load_pipeline("shapes")


def test_the_shipped_model_is_small_and_in_the_released_layout():
    directory = shipped_shapes_model()
    total = sum(p.stat().st_size for p in directory.iterdir())
    assert total <= 10 * 2**20, f"{total / 2**20:.1f} MiB"
    assert {"llm_config.json", "ema.safetensors", "ae.safetensors", "sigma_config.json"} <= {
        p.name for p in directory.iterdir()
    }


def test_it_loads_with_its_own_settings(shapes_pipe):
    arch = shapes_pipe.arch
    assert shapes_pipe.name == "shapes" and arch.vit is None
    assert arch.default_layout == "trained" and arch.group_mask and arch.attribute_projection


def test_compose_takes_the_shape_of_one_and_the_colour_of_the_other(shapes_pipe):
    """The README's example, on pictures drawn here (not the shipped example files): a held-out pair comes out."""
    triangle, circle = render([centred("triangle", "yellow", 34)]), render([centred("circle", "blue", 32)])
    prompt = "Draw the <subject>shape <img1> in the <style>colour of <img2>."
    out = shapes_pipe(prompt, [triangle, circle], config=FAST, seed=0).image
    assert (read(out).shape, read(out).colour) == ("triangle", "blue")  # blue triangles are held out of training
    swapped = shapes_pipe("Draw the <subject>shape <img2> in the <style>colour of <img1>.", [triangle, circle],
                          config=FAST, seed=0).image  # fmt: skip
    assert (read(swapped).shape, read(swapped).colour) == ("circle", "yellow")


def test_a_slice_of_the_held_out_evaluation(shapes_pipe, tmp_path: Path):
    make_world(tmp_path, rows=10, eval_rows=8)
    summary, _ = evaluate_pipeline(
        shapes_pipe, tmp_path / "eval", per_family=8, families=("compose", "select", "layout"), config=FAST
    )
    # Measured here at 20 steps with the strict reader (shape, colour, place and size, one object): compose 8/8 right,
    # select 7/8 right shapes (but 3/8 right colours: the model draws the named shape and misses its colour, see
    # docs/SHAPES.md), layout 8/8 right colours, 4/8 placed (the object over the box's template, IoU >= 0.5) and
    # 8/8 fitting the box, but 1/8 right: objects of the right colour and size in the box, of the wrong shape. On
    # the 100-row evaluation: compose 88 %, select shapes 96 %, layout colours 98 %, fits 92 %. The floors leave
    # margin for other CPUs and thread counts.
    assert summary["compose"]["accuracy"] >= 5 / 8, summary
    assert summary["select"]["shape"] >= 5 / 8, summary
    assert summary["layout"]["colour"] >= 6 / 8 and summary["layout"]["fits"] >= 5 / 8, summary


def test_the_web_ui_offers_the_worlds_examples_for_any_copy_of_the_shapes_model(shapes_pipe):
    from sigma_studio.webui.examples import EXAMPLES, SHAPES_EXAMPLES, examples_for

    assert examples_for(shapes_pipe.arch) is SHAPES_EXAMPLES
    assert all(Path(p).is_file() for ex in SHAPES_EXAMPLES for p in ex.paths())
    assert examples_for(load_pipeline("tiny").arch) is EXAMPLES


def test_the_autoencoder_lets_the_targets_through(shapes_pipe, tmp_path: Path):
    """`sigma shapes eval --reconstruct`: the held-out targets through the shipped autoencoder, read as the outputs
    are: the ceiling on every figure, which no generated picture can pass. The recipe's decoder stage raised
    background's from 23 % to 94 % (100 rows; a coloured canvas came back with a greyish edge)."""
    make_world(tmp_path, rows=10, eval_rows=8)
    summary, records = evaluate_pipeline(shapes_pipe, tmp_path / "eval", per_family=8, reconstruct=True)
    assert all(r["seconds"] == 0 for r in records) and len(records) == 40
    ceiling = {family: s["accuracy"] for family, s in summary.items()}
    # measured here: 8/8 in every family, background included (the base autoencoder: 2/8 of background's); the
    # floors leave a row for other CPUs and thread counts, two for background (94 % on 100 rows)
    assert ceiling.pop("background") >= 6 / 8, summary
    assert set(ceiling) == {"compose", "select", "layout", "text"} and min(ceiling.values()) >= 7 / 8, summary
