"""``grow_depth``: the shipped shapes model twice as deep computes exactly what it computed, until trained."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from sigma_studio.finetune.checkpoint import CheckpointError, grow_depth
from sigma_studio.model import GenerationConfig, load_pipeline
from sigma_studio.model.hub import shipped_shapes_model

FEW = GenerationConfig(steps=4)


def test_the_grown_model_draws_the_same_picture_with_twice_the_layers(tmp_path):
    grown = grow_depth(shipped_shapes_model(), tmp_path / "grown")
    assert json.loads((grown / "llm_config.json").read_text())["num_hidden_layers"] == 10
    pipe, deep = load_pipeline("shapes"), load_pipeline(str(grown))  # strict key matching: every tensor in place
    assert sum(p.numel() for p in deep.model.parameters()) > 1.8 * sum(p.numel() for p in pipe.model.parameters())
    same = [np.asarray(p("a red star", [], config=FEW, seed=0).image) for p in (pipe, deep)]
    assert np.array_equal(*same)
    ema = load_file(str(grown / "ema.safetensors"))
    layer = "language_model.model.layers"
    assert not ema[f"{layer}.3.self_attn.o_proj_moe_gen.weight"].any()  # the copy adds nothing to the stream
    assert ema[f"{layer}.3.self_attn.q_proj.weight"].equal(ema[f"{layer}.2.self_attn.q_proj.weight"])
    assert ema[f"{layer}.3.mlp.down_proj.weight"].shape == ema[f"{layer}.2.mlp.down_proj.weight"].shape


def test_weights_that_do_not_match_their_config_are_refused(tmp_path):
    source = tmp_path / "short"
    shutil.copytree(shipped_shapes_model(), source)
    ema = load_file(str(source / "ema.safetensors"))
    save_file({k: v for k, v in ema.items() if ".layers.4." not in k}, str(source / "ema.safetensors"))
    with pytest.raises(CheckpointError, match=r"cannot grow .*short.*its config says 5"):
        grow_depth(source, tmp_path / "grown")
    assert not (tmp_path / "grown").exists()


def test_the_probe_script_refuses_bad_arguments_before_it_writes_anything(tmp_path):
    script = Path(__file__).parents[1] / "examples" / "shapes_probe.sh"
    refusals = {
        (): "usage:",
        ("selct",): "unknown family 'selct'",
        ("select", "3k"): "STEPS must be a whole number of optimizer steps, not '3k'",
        ("select", "3000", "deep"): "DEPTH is shipped or grown, not 'deep'",
        (
            "select",
            "3000",
            "grown",
            "x",
        ): "AUX is none, describe, plans, plans+describe, plans+shades, shades, find, find+shades, find+plans, "
        "place-plans, scene-plans, scene+colour-plans, labels, labels+fair, boxed, boxed+drawn, "
        "boxed+drawn+colour, plans+boxed, rope2d, shift3 or shift10, not 'x'",
        ("select", "3000", "grown", "describe", "x"): "usage:",
        ("select", "3000", "shipped", "none+shift10"): "+shift10 goes after another arm (not none, rope2d or a "
        "shift), not 'none+shift10'",
        ("select", "3000", "shipped", "shift3+shift10"): "not 'shift3+shift10'",
        ("find", "3000", "shipped"): "FAMILY find trains on find rows alone: give AUX find, find+shades or find+plans",
        (
            "boxed",
            "3000",
            "shipped",
            "describe",
        ): "FAMILY boxed trains on boxed rows alone: give AUX boxed, boxed+drawn or boxed+drawn+colour",
    }
    for args, said in refusals.items():
        out = subprocess.run(["bash", str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and said in out.stderr, out.stderr
        assert list(tmp_path.iterdir()) == []
