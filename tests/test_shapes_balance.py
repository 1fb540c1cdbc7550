"""The background stage's options beside its rows: the training-only boxed family's rows, label heads that read what
the tokens being drawn or the references show (``--balance-boxed-rows``, ``--balance-label-weight``,
``--balance-labels``) and select's and layout's rows at their own noise shift (``--balance-family-shift``)."""

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
from sigma_studio.model.shapes.labels import REFERENCE_SETS
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


def test_the_stage_reads_references_and_shifts_select_and_layout_when_asked():
    """--balance-labels reference: the heads read each reference token's shape and whether it is the named object,
    after layer 1; --balance-family-shift S: select's and layout's rows at shift S (0, the default: the run's)."""
    plain = tiny("x").balance_config(Path("x/average"))
    assert plain.family_shifts == {} and plain.label_sets == BALANCE_LABEL_SETS
    asked = tiny("x", balance_label_weight=0.5, balance_labels="reference", balance_family_shift=10.0)
    cfg = asked.balance_config(Path("x/average"))
    assert (cfg.label_weight, cfg.label_sets, cfg.label_layer) == (0.5, REFERENCE_SETS, 1)
    assert cfg.family_shifts == {"select": 10.0, "layout": 10.0}
    with pytest.raises(InputError, match="--balance-labels scene: choose drawn or reference"):
        tiny("x", balance_labels="scene")
    with pytest.raises(InputError, match="--balance-family-shift"):
        tiny("x", balance_family_shift=-1.0)


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
