"""`sigma finetune --recipe release|paper`: the released scripts' choices (the default) or the SIGMA paper's, with
every option given on the command line winning over the recipe."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import sigma_studio.cli.finetune as command
from sigma_studio.cli.main import app
from sigma_studio.finetune.config import RECIPES, TrainConfig


@pytest.fixture
def configs(monkeypatch, tmp_path):
    """Run `sigma finetune ARGS` up to the Trainer and return the TrainConfig it would train with."""
    seen = []

    class Done:
        class dist:
            main = False

    monkeypatch.setattr(command, "_train", lambda cfg: (seen.append(cfg), (Done(), tmp_path))[1])
    monkeypatch.setattr("sigma_studio.finetune.data.check_family_weights", lambda *a: None)
    monkeypatch.setattr("sigma_studio.model.data.dataset.parquet_files", lambda *a, **k: [])

    def run(*args: str) -> TrainConfig:
        result = CliRunner().invoke(app, ["finetune", "--out", str(tmp_path / "run"), "--dataset", "rows", *args])
        assert result.exit_code == 0, result.output
        return seen[-1]

    return run


def test_release_is_the_default_and_the_dataclass(configs):
    cfg = configs()
    assert cfg == TrainConfig(out=cfg.out, dataset="rows")
    assert (cfg.trainable, cfg.steps, cfg.group_mask, cfg.attribute_projection) == ("all", 30_000, False, False)


def test_paper_trains_the_generation_branch_with_both_mechanisms(configs):
    cfg = configs("--recipe", "paper")
    assert (cfg.trainable, cfg.steps, cfg.group_mask, cfg.attribute_projection) == ("gen", 50_000, True, True)
    assert RECIPES["paper"] == {"trainable": "gen", "steps": 50_000, "attribute_projection": True, "group_mask": True}


def test_options_on_the_command_line_win_over_the_recipe(configs):
    cfg = configs("--recipe", "paper", "--steps", "7", "--train", "all", "--no-group-mask")
    assert (cfg.trainable, cfg.steps, cfg.group_mask, cfg.attribute_projection) == ("all", 7, False, True)
    cfg = configs("--recipe", "paper", "--steps", "30000")  # the release's value, given: it stands
    assert cfg.steps == 30_000


def test_an_unknown_recipe_is_one_line():
    result = CliRunner().invoke(app, ["finetune", "--out", "x", "--recipe", "vibes"])
    assert result.exit_code == 2 and "--recipe vibes is not one of release, paper" in result.output
