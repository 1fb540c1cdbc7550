"""The MoT stage's own levers (``sigma shapes train --boxed-rows N --fair-distractors --label-weight W``): the
training-only boxed family and fair-distractor select scenes in its data, and label heads that read every label set
from its first step."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from sigma_studio.finetune.checkpoint import latest_checkpoint
from sigma_studio.finetune.labels import FILE
from sigma_studio.finetune.shapes_config import LABEL_LAYER
from sigma_studio.finetune.shapes_recipe import run
from sigma_studio.model.data.dataset import iter_rows
from sigma_studio.model.errors import InputError
from sigma_studio.model.hub import shipped_shapes_model
from sigma_studio.model.shapes.labels import HEADS
from sigma_studio.model.shapes.tasks import make_world
from tests.test_shapes_recipe import tiny

pytest.importorskip("pyarrow")


def test_the_options_reach_the_mot_s_finetune_and_are_checked():
    plain = tiny("x").train_config()
    assert plain.label_weight == 0.0 and plain.family_weights == {}
    labelled = tiny("x", label_weight=0.5).train_config()
    assert (labelled.label_weight, labelled.label_layer, labelled.label_sets) == (0.5, LABEL_LAYER, tuple(HEADS))
    assert labelled.init == "random" and labelled.steps == 2  # the MoT's own schedule, not a finetune's
    with pytest.raises(InputError, match="--boxed-rows"):
        tiny("x", boxed_rows=-1)
    with pytest.raises(InputError, match="--label-weight"):
        tiny("x", label_weight=-0.1)


def test_the_mot_trains_with_boxed_rows_fair_scenes_and_every_head_and_exports_the_plain_model(tmp_path):
    shipped = shipped_shapes_model()
    recipe = tiny(tmp_path / "run", base=str(shipped), decoder_steps=0, curriculum_weight=0.0, balance_steps=0,
                  boxed_rows=4, fair_distractors=True, label_weight=0.5)  # fmt: skip
    model = run(recipe)
    data = tmp_path / "run" / "data"
    assert json.loads((data / "world.json").read_text()).get("fair_distractors") is True
    make_world(tmp_path / "same", 10, 2, 0, auxiliary={"boxed": 4}, fair_distractors=True)
    for name in ("boxed.parquet", "select.parquet"):  # the rows `sigma shapes make` writes with the same options
        ours = [(r.instruction, r.images, r.meta) for r in iter_rows([data / "train" / name])]
        assert ours == [(r.instruction, r.images, r.meta) for r in iter_rows([tmp_path / "same" / "train" / name])]
    checkpoint = latest_checkpoint(tmp_path / "run" / "train")
    heads = load_file(str(checkpoint / FILE))
    assert {k.split(".")[1] for k in heads if k.startswith("heads.")} == set(HEADS)
    config = json.loads((checkpoint / "trainer_state.json").read_text())["config"]
    assert config["label_weight"] == 0.5 and config["label_layer"] == LABEL_LAYER
    assert load_file(str(model / "ema.safetensors")).keys() == load_file(str(shipped / "ema.safetensors")).keys()
    assert not (model / FILE).exists()  # the heads are training-only
