"""`sigma finetune --recipe release|paper`: the released scripts' choices (the default) or the SIGMA paper's, with
every option given on the command line winning over the recipe."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import sigma_studio.cli.finetune as command
from sigma_studio.cli.main import app
from sigma_studio.finetune.config import RECIPES, TrainConfig
from tests import test_finetune as ft

workspace = ft.workspace  # the fixture: rows and a saved tiny model


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


def test_prodigy_trains_and_resumes_bit_for_bit(workspace):
    """--optimizer prodigy (the SIGMA-GEN paper's): a run killed after step 3 and resumed from its step-2
    checkpoint gives the losses and optimizer state of a straight run (Prodigy's d estimates included)."""
    pytest.importorskip("prodigyopt")
    import torch
    from safetensors.torch import load_file

    ws = workspace
    kw = dict(model="tiny", steps=4, optimizer="prodigy", lr=1.0, min_lr=0.0)
    straight, straight_losses = ft.train(ft.config(ws, "straight", save_every=4, **kw))
    cfg = ft.config(ws, "killed", save_every=2, **kw)
    _, first = ft.train(cfg, stop_at=3)
    assert first == straight_losses[:3]
    resumed, rest = ft.train(cfg.replace(resume=True))
    assert rest == straight_losses[2:]
    a, b = ft.last_checkpoint(straight.run_dir), ft.last_checkpoint(resumed.run_dir)
    sa, sb = load_file(str(a / "optimizer.safetensors")), load_file(str(b / "optimizer.safetensors"))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert type(straight.optimizer).__name__ == "Prodigy"


def test_optimizer_choices_and_bounds():
    from sigma_studio.model import InputError

    assert TrainConfig(out="x").optimizer == "adamw"
    assert TrainConfig(out="x", optimizer="prodigy", lr=1.0).lr == 1.0  # a multiplier: above AdamW's bound
    with pytest.raises(InputError, match="--optimizer lion is not one of adamw, prodigy"):
        TrainConfig(out="x", optimizer="lion")
    with pytest.raises(InputError, match="--lr 50 is above 10"):
        TrainConfig(out="x", optimizer="prodigy", lr=50.0)
    with pytest.raises(InputError, match="--lr 1 is above 0.1"):
        TrainConfig(out="x", lr=1.0)


def test_the_training_noise_shift_is_an_option(configs):
    """--timestep-shift: the trainer's shift of the noise levels it draws (BAGEL's 1 by default), checked in range."""
    assert configs().timestep_shift is None  # the model config's own (train_timestep_shift: BAGEL's 1.0)
    assert configs("--timestep-shift", "3").timestep_shift == 3.0
    result = CliRunner().invoke(app, ["finetune", "--out", "x", "--dataset", "rows", "--timestep-shift", "0"])
    assert result.exit_code != 0 and "--timestep-shift must be" in result.output


def test_the_shift_trained_with_is_saved_with_the_model(workspace):
    """The shift a run draws its noise levels at is the model config's train_timestep_shift (BAGEL's 1.0) unless
    --timestep-shift says otherwise, and the one used is saved in the checkpoint's config."""
    import json

    for name, shift, saved in (("own", None, 1.0), ("shifted", 3.0, 3.0)):
        trainer, _ = ft.train(ft.config(workspace, name, steps=1, save_every=1, timestep_shift=shift))
        config = json.loads((ft.last_checkpoint(trainer.run_dir) / "sigma_config.json").read_text())
        assert config["arch"]["train_timestep_shift"] == saved and trainer.arch.train_timestep_shift == saved


def test_a_family_draws_its_noise_levels_at_its_own_shift(configs):
    """--family-shift FAMILY=SHIFT: that family's rows at their own shift, packed among rows at the run's; the raw
    time it writes, read at the run's shift, is the noise level the family's shift gives."""
    from sigma_studio.finetune.data import shifted_raw
    from sigma_studio.model.run.packed import flow_time

    assert configs().family_shifts == {}
    assert configs("--family-shift", "select=10", "--family-shift", "layout=4").family_shifts == {
        "select": 10.0, "layout": 4.0}  # fmt: skip
    for raw in (-3.0, -0.4, 0.0, 0.7, 2.5):
        for shift, trained in ((10.0, 1.0), (10.0, 3.0), (0.5, 2.0)):
            got = flow_time(torch.tensor(shifted_raw(raw, shift, trained)), trained)
            assert float(got) == pytest.approx(float(flow_time(torch.tensor(raw), shift)), abs=1e-6)
        assert shifted_raw(raw, 2.0, 2.0) == raw
    assert shifted_raw(float("inf"), 10.0, 1.0) == float("inf") and shifted_raw(float("-inf"), 10.0, 1.0) < 0


def test_the_trainer_shifts_only_the_named_family(workspace):
    """In the trainer's stream, a --family-shift family's samples carry the shifted raw time of the same draw, and
    the other families' are untouched; an unknown family is refused with the dataset's families."""
    from sigma_studio.finetune.data import shifted_raw
    from sigma_studio.finetune.trainer import Trainer
    from sigma_studio.model import InputError

    plain, shifted = (Trainer(ft.config(workspace, name, family_shifts=fs))
                      for name, fs in (("fs-plain", {}), ("fs-shifted", {"edit": 10.0})))  # fmt: skip
    plain.setup()
    shifted.setup()
    first = [(key[0], s) for (key, s), _ in zip(plain.samples(), range(6), strict=False)]
    again = {key[0]: s for (key, s), _ in zip(shifted.samples(), range(6), strict=False)}
    assert first and all(s.family == "edit" for _, s in first)
    for pos, s in first:
        assert again[pos].raw_timestep == pytest.approx(shifted_raw(s.raw_timestep, 10.0, 1.0))
        assert again[pos].raw_timestep > s.raw_timestep  # nearer pure noise
    with pytest.raises(InputError, match="--family-shift nosuch: no such task family"):
        Trainer(ft.config(workspace, "fs-unknown", family_shifts={"nosuch": 3.0})).setup()
