"""`sigma shapes train`'s stages end to end at toy size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sigma_studio.finetune.shapes_recipe import ShapesRecipe, run
from sigma_studio.model.errors import InputError


def tiny(out: Path, **changes) -> ShapesRecipe:
    small = dict(rows=10, eval_rows=2, sigmagen_rows=4, sigmagen_eval=1, ae_steps=1, ae_images=16, steps=2)
    return ShapesRecipe(out=str(out), **{**small, **changes})


def test_a_reused_base_of_another_architecture_is_refused_before_anything_is_written(tmp_path):
    import shutil

    from sigma_studio.finetune.shapes_recipe import check_base
    from sigma_studio.model.hub import shipped_shapes_model

    base = tmp_path / "old-base"
    shutil.copytree(shipped_shapes_model(), base)
    check_base(base)  # this version's architecture: accepted
    config = json.loads((base / "sigma_config.json").read_text())
    config["arch"]["routing_step"], config["arch"]["sheet_rows"] = 10, 1  # as the first generation's
    (base / "sigma_config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"--base .* \(routing_step, sheet_rows differ from this version's\)"):
        run(tiny(tmp_path / "run", base=str(base)))
    assert not (tmp_path / "run" / "data").exists()
    with pytest.raises(InputError, match="holds no ae.safetensors"):
        run(tiny(tmp_path / "run", base=str(tmp_path)))
