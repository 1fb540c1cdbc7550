"""The background stage's options beside its rows: the training-only boxed family's rows and label heads that read
what the tokens being drawn show (``--balance-boxed-rows``, ``--balance-label-weight``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from sigma_studio.finetune.checkpoint import latest_checkpoint
from sigma_studio.finetune.labels import FILE
from sigma_studio.finetune.shapes_config import BALANCE_LABEL_LAYER, BALANCE_LABEL_SETS
from sigma_studio.finetune.shapes_stages import balance_stage, boxed_rows
from sigma_studio.model.data.dataset import iter_rows
from sigma_studio.model.errors import InputError
from sigma_studio.model.hub import shipped_shapes_model
from sigma_studio.model.shapes.tasks import make_world
from tests.test_shapes_recipe import tiny

pytest.importorskip("pyarrow")


def test_the_options_reach_the_stage_s_finetune_and_are_checked():
    plain = tiny("x", balance_boxed_rows=0, balance_label_weight=0.0).balance_config(Path("x/average"))
    assert plain.family_weights == {"background": 5.0} and plain.label_weight == 0.0
    both = tiny("x", balance_boxed_rows=4, balance_label_weight=0.5).balance_config(Path("x/average"))
    assert both.family_weights == {"background": 5.0, "boxed": 3.0}
    assert (both.label_weight, both.label_layer, both.label_sets) == (0.5, BALANCE_LABEL_LAYER, BALANCE_LABEL_SETS)
    with pytest.raises(InputError, match="--balance-boxed-rows"):
        tiny("x", balance_boxed_rows=-1)
    with pytest.raises(InputError, match="--balance-label-weight"):
        tiny("x", balance_label_weight=-0.5)


def test_the_stage_s_boxed_rows_are_those_sigma_shapes_make_writes(tmp_path):
    make_world(tmp_path / "world", 10, 2, 11, auxiliary={"boxed": 5})
    boxed_rows(tmp_path / "boxed.parquet", 5, 11)
    made = list(iter_rows([tmp_path / "world" / "train" / "boxed.parquet"]))
    ours = list(iter_rows([tmp_path / "boxed.parquet"]))
    assert [(r.instruction, r.images, r.meta) for r in ours] == [(r.instruction, r.images, r.meta) for r in made]
    boxed_rows(tmp_path / "neutral.parquet", 2, 11, attribute_tokens=False)  # the ablation's token-free arm
    assert all("<layout>" not in r.instruction for r in iter_rows([tmp_path / "neutral.parquet"]))


def test_the_stage_trains_with_boxed_rows_and_label_heads_and_exports_the_plain_model(tmp_path):
    recipe = tiny(tmp_path / "run", balance_boxed_rows=4, balance_label_weight=0.5)
    start = shipped_shapes_model()
    done = balance_stage(recipe, start, lambda stage, message: None)
    rows = {p.name for p in (tmp_path / "run" / "data" / "balance" / "train").glob("*.parquet")}
    assert {"boxed.parquet", "sigmagen.parquet", "layout.parquet"} <= rows
    checkpoint = latest_checkpoint(tmp_path / "run" / "balance")
    heads = load_file(str(checkpoint / FILE))
    assert {k.split(".")[1] for k in heads if k.startswith("heads.")} == set(BALANCE_LABEL_SETS)
    assert load_file(str(done / "ema.safetensors")).keys() == load_file(str(start / "ema.safetensors")).keys()
    assert not (done / FILE).exists()  # the heads are training-only
    config = json.loads((checkpoint / "trainer_state.json").read_text())["config"]
    assert config["label_weight"] == 0.5 and config["family_weights"]["boxed"] == 3.0
