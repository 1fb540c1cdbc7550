"""`sigma shapes train`'s stages end to end at toy size: data, autoencoder, base, the MoT, the decoder finetune, the
export (mot/), SIGMA-GEN's curriculum and its average (average/), the background stage and its average (model/); a
rerun resumes instead of retraining, and a reused base of another architecture is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sigma_studio.finetune.checkpoint import latest_checkpoint
from sigma_studio.finetune.shapes_recipe import DECODER_MIX, ShapesRecipe, run
from sigma_studio.finetune.sigmagen_recipe import Stage
from sigma_studio.model.errors import InputError


def tiny(out: Path | str, **changes) -> ShapesRecipe:
    small = dict(rows=10, eval_rows=2, sigmagen_rows=4, sigmagen_eval=1, ae_steps=1, ae_images=16, steps=2,
                 decoder_steps=2, decoder_rows=10, balance_steps=2, balance_rows=10, balance_sigmagen_rows=4,
                 curriculum=(Stage("boxes", (2, 3), ("box",), 0.0, 0.0, rows=4, steps=2),))  # fmt: skip
    return ShapesRecipe(out=str(out), **{**small, **changes})


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[ShapesRecipe, tuple[list, list], Path]:
    recipe = tiny(tmp_path_factory.mktemp("shapes") / "run")
    steps, stages = [], []
    model = run(recipe, lambda stage, message: stages.append(stage), on_step=lambda s: steps.append(s.step))
    return recipe, (steps, stages), model


def test_every_stage_runs_and_the_model_ships_the_averages_of_each_finetune_and_its_start(finished):
    recipe, (steps, stages), model = finished
    out = Path(recipe.out)
    assert steps == [1, 2]
    assert stages[0] == "data" and "base" in stages and stages[-1] == "model" and "decoder" in stages
    assert "curriculum" in stages
    mot, ema = (
        load_file(str(out / "mot" / "ema.safetensors")),
        load_file(str(latest_checkpoint(out / "train") / "ema.safetensors")),
    )
    assert mot.keys() == ema.keys()
    assert all((mot[k].float() - ema[k].half().float()).abs().max() == 0 for k in mot)
    # the curriculum trained from mot/ on SIGMA-GEN's rows and SIGMA's (replayed), and the shipped weights are the mean
    rows = {p.name for p in (out / "curriculum" / "boxes" / "data").glob("*.parquet")}
    assert "train.parquet" in rows and "sigma-select.parquet" in rows
    tuned, average = (load_file(str(out / "curriculum" / "boxes" / "model" / "ema.safetensors")),
                      load_file(str(out / "average" / "ema.safetensors")))  # fmt: skip
    assert any((tuned[k] - mot[k]).abs().max() > 0 for k in mot)
    assert all(torch.equal(average[k], torch.lerp(mot[k].float(), tuned[k].float(), 0.5).half()) for k in average)
    # the background stage finetuned that average on fresh rows of every kind, and model/ is their mean
    assert {p.name for p in (out / "data" / "balance" / "train").glob("*.parquet")} >= {
        "background.parquet", "select.parquet", "sigmagen.parquet"}  # fmt: skip
    balanced, shipped = (load_file(str(out / "balance" / "model" / "ema.safetensors")),
                         load_file(str(model / "ema.safetensors")))  # fmt: skip
    assert model == out / "model" and any((balanced[k] - average[k]).abs().max() > 0 for k in average)
    assert all(
        torch.equal(shipped[k], torch.lerp(average[k].float(), balanced[k].float(), 0.5).half()) for k in shipped
    )
    assert json.loads((model / "sigma_config.json").read_text()) == json.loads(
        (out / "mot" / "sigma_config.json").read_text()
    )  # the same skills: the curriculum's model reads what mot/ reads
    base, tuned = load_file(str(out / "base" / "ae.safetensors")), load_file(str(out / "decoder" / "ae.safetensors"))
    ae = load_file(str(model / "ae.safetensors"))
    assert base.keys() == tuned.keys() == ae.keys()
    changed = {k for k in base if (base[k] - tuned[k]).abs().max() > 0}
    assert changed and all(k.startswith("decoder.") for k in changed)  # the encoder, so the latents, untouched
    assert all((ae[k].float() - tuned[k].half().float()).abs().max() == 0 for k in ae)
    assert set(json.loads((out / "decoder" / "metrics.json").read_text())) == {"psnr_db_before", "psnr_db_after"}
    assert {p.name for p in (out / "data" / "decoder").glob("*.parquet")} == {f"{f}.parquet" for f in DECODER_MIX}
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == {"data", "autoencoder", "finetune", "decoder", "export", "curriculum", "average", "balance",
                            "balance average", "total"}  # fmt: skip


def test_a_rerun_trains_nothing(finished):
    recipe, _, _ = finished
    out = Path(recipe.out)
    decoder = (out / "decoder" / "ae.safetensors").stat().st_mtime_ns
    tuned = (out / "curriculum" / "boxes" / "model" / "ema.safetensors").stat().st_mtime_ns
    before = json.loads((out / "timings.json").read_text())
    steps = []
    run(recipe, on_step=lambda s: steps.append(s.step))
    assert steps == []
    assert (out / "decoder" / "ae.safetensors").stat().st_mtime_ns == decoder
    assert (out / "curriculum" / "boxes" / "model" / "ema.safetensors").stat().st_mtime_ns == tuned
    after = json.loads((out / "timings.json").read_text())  # each stage's seconds summed over both invocations
    assert after.keys() == before.keys()
    assert after["total"] == pytest.approx(sum(v for k, v in after.items() if k != "total"))


def test_a_moved_run_folder_resumes_and_its_average_may_be_redone_but_its_mot_not_trained_further(finished, tmp_path):
    import shutil

    recipe, _, _ = finished
    moved = tmp_path / "moved"
    shutil.copytree(recipe.out, moved)
    tuned = moved / "curriculum" / "boxes" / "model" / "ema.safetensors"
    trained = tuned.stat().st_mtime_ns
    steps = []
    balanced = moved / "balance" / "model" / "ema.safetensors"
    model = run(tiny(moved, balance_weight=1.0), on_step=lambda s: steps.append(s.step))  # the folder moved
    assert steps == [] and tuned.stat().st_mtime_ns == trained  # nothing trained again, the curriculum included
    shipped, finetuned = load_file(str(model / "ema.safetensors")), load_file(str(balanced))
    assert all(torch.equal(shipped[k], finetuned[k]) for k in shipped)  # the average redone, all of the finetune
    # another curriculum weight makes another average, which the background stage did not start from: refused
    before = (model / "ema.safetensors").read_bytes()
    with pytest.raises(InputError, match=r"balance finetuned another model than .*average \(sha256 [0-9a-f]{12}"):
        run(tiny(moved, curriculum_weight=1.0, balance_weight=1.0), on_step=lambda s: steps.append(s.step))
    assert steps == [] and (model / "ema.safetensors").read_bytes() == before  # no average of the two written
    model = run(tiny(moved, curriculum_weight=1.0, balance_weight=0.0))  # without it, the curriculum's average ships
    shipped, finetuned = load_file(str(model / "ema.safetensors")), load_file(str(tuned))
    assert model == moved / "model" and all(torch.equal(shipped[k], finetuned[k]) for k in shipped)
    with pytest.raises(InputError, match=r"curriculum finetuned the MoT of --steps 2: pass --steps 2 to resume"):
        run(tiny(moved, steps=3))
    assert latest_checkpoint(moved / "train").name.endswith("2")  # refused before the MoT trained a step


def test_a_background_stage_stopped_before_its_export_exports_without_training_again(finished, tmp_path, monkeypatch):
    import shutil

    from sigma_studio.finetune.trainer import Trainer

    recipe, _, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(recipe.out, copy)
    shipped = (copy / "model" / "ema.safetensors").read_bytes()
    shutil.rmtree(copy / "balance" / "model")
    shutil.rmtree(copy / "model")
    monkeypatch.setattr(
        Trainer, "run", lambda self: pytest.fail("a trainer set up again (its data read, its model loaded)")
    )
    again = run(tiny(copy))
    assert (again / "ema.safetensors").read_bytes() == shipped


def test_a_background_stage_without_its_record_or_with_an_unreadable_one_is_refused(finished, tmp_path):
    import shutil

    recipe, _, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(recipe.out, copy)
    record = copy / "balance" / "start.json"
    record.write_text("{")
    with pytest.raises(InputError, match=r"start.json is unreadable .*: delete .*balance to finetune this one"):
        run(tiny(copy))
    record.unlink()  # checkpoints made by hand: nothing says which model they finetuned
    with pytest.raises(InputError, match=r"balance has no start.json, so nothing says which model it finetuned"):
        run(tiny(copy))


def test_a_curriculum_of_another_mot_is_refused_not_averaged(finished, tmp_path):
    import shutil

    recipe, _, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(recipe.out, copy)
    origin = copy / "curriculum" / "mot.json"
    recorded = json.loads(origin.read_text())
    assert recorded["steps"] == 2 and len(recorded["sha256"]) == 64
    shipped = (copy / "model" / "ema.safetensors").read_bytes()
    origin.write_text(json.dumps({**recorded, "sha256": "0" * 64}))  # as if the MoT had been trained again
    with pytest.raises(InputError, match=r"finetuned another MoT than .*mot \(2 steps, sha256 000000000000"):
        run(tiny(copy))
    assert (copy / "model" / "ema.safetensors").read_bytes() == shipped  # no average of the two was written
    origin.write_text("{")
    with pytest.raises(InputError, match=r"mot.json is unreadable"):
        run(tiny(copy))
    origin.write_text(json.dumps({"steps": 2}))  # an older recipe's record: steps alone
    with pytest.raises(InputError, match=r"older recipe that recorded the MoT's steps alone"):
        run(tiny(copy))
    without = run(tiny(copy, curriculum_weight=0.0, balance_weight=0.0))  # no curriculum: no record of it read
    assert (without / "ema.safetensors").is_file()
    origin.write_text(json.dumps(recorded))
    shutil.rmtree(copy / "train")  # the MoT it finetuned is gone: refused before a MoT is trained again
    with pytest.raises(InputError, match=r"which is gone: restore it"):
        run(tiny(copy), on_step=lambda s: pytest.fail("the MoT trained again"))
    assert not (copy / "train").exists()
    origin.unlink()  # a curriculum made by hand (`sigma sigmagen train`): nothing says which MoT it finetuned
    with pytest.raises(InputError, match=r"has no mot.json, so nothing says which MoT it finetuned"):
        run(tiny(copy))


def test_without_the_decoder_stage_the_model_ships_the_base_autoencoder(tmp_path):
    model = run(tiny(tmp_path / "run", decoder_steps=0, sigmagen_rows=0, sigmagen_eval=0))
    assert not (tmp_path / "run" / "decoder").exists()
    assert not (tmp_path / "run" / "curriculum").exists()  # no SIGMA-GEN rows: no SIGMA-GEN curriculum either
    base, ae = load_file(str(tmp_path / "run" / "base" / "ae.safetensors")), load_file(str(model / "ae.safetensors"))
    assert all((ae[k].float() - base[k].half().float()).abs().max() == 0 for k in ae)
    # trained on no SIGMA-GEN row, it says so: a request with --subject is warned
    assert json.loads((model / "sigma_config.json").read_text())["arch"]["skills"] == ["attribute_tokens", "boxes"]


def test_the_background_stage_weighs_up_background_rows_and_the_last_stage_writes_model():
    recipe = tiny("x")
    config = recipe.balance_config(Path("x/average"))
    assert config.family_weights == {"background": 5.0} and config.init == "weights" and config.model == "x/average"
    assert (config.steps, config.lr, config.warmup, config.ema) == (2, 3e-4, 100, 0.995)
    assert Path(config.dataset) == Path("x/data/balance/train")
    assert recipe.stage_outputs == {"mot": Path("x/mot"), "average": Path("x/average"), "balance": Path("x/model")}
    assert tiny("x", balance_weight=0.0).stage_outputs["average"] == Path("x/model")
    assert tiny("x", balance_steps=0, curriculum_weight=0.0).stage_outputs["mot"] == Path("x/model")
    with pytest.raises(InputError, match=r"--balance-weight is a share, from 0 .* to 1 \(all of it; got 1.5\)"):
        tiny("x", balance_weight=1.5)


def test_a_model_s_skills_are_what_its_rows_taught():
    """The ablation's token-free arm does not claim to read attribute tokens (it was stored as if it did)."""
    assert tiny("x").skills == ("attribute_tokens", "boxes", "subjects")
    assert tiny("x", sigmagen_rows=0, sigmagen_eval=0).skills == ("attribute_tokens", "boxes")
    assert tiny("x", sigmagen_rows=0, attribute_tokens=False).skills == ("boxes",)


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
    with pytest.raises(InputError, match="does not exist"):
        run(tiny(tmp_path / "run", base=str(tmp_path / "nowhere")))


def test_a_run_folders_own_base_of_another_architecture_is_refused_too(tmp_path):
    import shutil

    from sigma_studio.model.hub import shipped_shapes_model

    shutil.copytree(shipped_shapes_model(), tmp_path / "run" / "base")
    config = json.loads((tmp_path / "run" / "base" / "sigma_config.json").read_text())
    config["arch"]["sheet_rows"] = 1
    (tmp_path / "run" / "base" / "sigma_config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"\(sheet_rows differ from this version's\)"):
        run(tiny(tmp_path / "run"))


def test_a_reused_base_with_another_tokenizer_is_refused(tmp_path):
    import shutil

    from sigma_studio.finetune.shapes_recipe import check_base
    from sigma_studio.model.hub import shipped_shapes_model
    from sigma_studio.model.shapes.vocab import build_tokenizer

    base = tmp_path / "old-base"
    shutil.copytree(shipped_shapes_model(), base)
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (base / name).unlink(missing_ok=True)
    build_tokenizer(["a red circle", "a blue square"] * 20).save(base)  # merges learnt from other sentences
    with pytest.raises(InputError, match=r"--base .* holds another tokenizer than this version's world"):
        check_base(base)


def test_the_decoder_learning_rate_and_the_curriculums_shares_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(InputError, match="decoder_lr"):
        tiny(tmp_path, decoder_lr=0.0)
    with pytest.raises(
        InputError, match=r"--curriculum-weight is a share, from 0 \(none of the finetune\) to 1 \(all of it; got 1.5\)"
    ):
        tiny(tmp_path, curriculum_weight=1.5)
    with pytest.raises(InputError, match=r"--curriculum-replay must be in \[0, 1\) \(got 1.0\)"):
        tiny(tmp_path, curriculum_replay=1.0)
    assert not tiny(tmp_path, curriculum_weight=0.0).with_curriculum
    with pytest.raises(InputError, match=r"replays them with their tokens: add --sigmagen-rows 0 or --curriculum-w"):
        tiny(tmp_path, attribute_tokens=False)  # the token-free arm with SIGMA-GEN's curriculum
    assert not tiny(tmp_path, attribute_tokens=False, sigmagen_rows=0).with_curriculum
    assert not list(tmp_path.iterdir())


def test_a_run_folder_resumes_only_with_its_own_settings(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    made = tiny(out).to_json()
    (out / "recipe.json").write_text(json.dumps({k: v for k, v in made.items() if k != "attribute_tokens"}))
    tiny(out).check_same_run()  # a field the folder predates counts as its default
    tiny(out, steps=5).check_same_run()  # a longer schedule continues the run
    tiny(f"{out}/.").check_same_run()  # the same folder, spelt otherwise
    with pytest.raises(InputError, match=r"holds a run made with other settings \(attribute_tokens=True\)"):
        tiny(out, attribute_tokens=False, curriculum_weight=0.0).check_same_run()
    with pytest.raises(InputError, match=r"\(lr=0.0007, rows=10\)"):
        tiny(out, rows=11, lr=1e-3).check_same_run()


def test_two_models_of_other_weights_are_not_averaged(tmp_path):
    import shutil

    from safetensors.torch import save_file

    from sigma_studio.finetune.checkpoint import CheckpointError, average_models
    from sigma_studio.model.hub import shipped_shapes_model

    other = tmp_path / "other"
    shutil.copytree(shipped_shapes_model(), other)
    ema = load_file(str(other / "ema.safetensors"))
    dropped = sorted(ema)[0]
    save_file({k: v for k, v in ema.items() if k != dropped}, str(other / "ema.safetensors"))
    with pytest.raises(CheckpointError, match=rf"cannot average .*: their weights differ \({dropped}"):
        average_models(other, shipped_shapes_model(), 0.5, tmp_path / "model")  # the start lacks a tensor
    assert not (tmp_path / "model").exists()
