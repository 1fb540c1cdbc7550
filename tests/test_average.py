"""`sigma average`: a finetune averaged with the model it started from (WiSE-FT), weight by weight, and what a wrong
start, finetune, share or output folder gets instead."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from sigma_studio.model.hub import shipped_shapes_model
from tests.test_cli_input import assert_refused, sigma


@pytest.fixture
def finetuned(tmp_path):
    """A `sigma finetune` run folder whose newest checkpoint is the shipped shapes model with every weight moved."""
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000010"
    shutil.copytree(shipped_shapes_model(), checkpoint)
    ema = load_file(str(checkpoint / "ema.safetensors"))
    save_file({k: (v.float() * 0.5 + 1.0).to(v.dtype) for k, v in ema.items()}, str(checkpoint / "ema.safetensors"))
    (checkpoint / "trainer_state.json").write_text('{"step": 10}')  # what makes a checkpoint complete
    (tmp_path / "run" / "latest").write_text("checkpoints/step-000010")
    return tmp_path / "run"


def test_every_weight_is_the_finetune_s_share_of_the_way_from_the_start(capsys, tmp_path, finetuned):
    code, lines, out = sigma(capsys, "average", "shapes", finetuned, "--weight", "0.25", "--out", tmp_path / "wise")
    assert code == 0, lines
    assert "✓" in out and "0.75 of shapes" in out
    start = load_file(str(shipped_shapes_model() / "ema.safetensors"))
    late = load_file(str(finetuned / "checkpoints" / "step-000010" / "ema.safetensors"))
    made = load_file(str(tmp_path / "wise" / "ema.safetensors"))
    assert made.keys() == start.keys()
    for key, value in made.items():
        assert value.dtype == late[key].dtype
        torch.testing.assert_close(value, torch.lerp(start[key].float(), late[key].float(), 0.25).to(value.dtype))
    assert (tmp_path / "wise" / "llm_config.json").is_file() and (tmp_path / "wise" / "tokenizer.json").is_file()


def test_weight_0_is_the_start_tensor_for_tensor_and_loads_with_strict_keys(capsys, tmp_path, finetuned):
    from sigma_studio.model import load_pipeline

    code, lines, _ = sigma(capsys, "average", "shapes", finetuned, "--weight", "0", "--out", tmp_path / "same")
    assert code == 0, lines
    start = load_file(str(shipped_shapes_model() / "ema.safetensors"))
    made = load_file(str(tmp_path / "same" / "ema.safetensors"))
    assert made.keys() == start.keys() and all(torch.equal(made[k], start[k]) for k in start)
    load_pipeline(str(tmp_path / "same"))  # the shared loader matches every key strictly, or raises


def _reshaped(tmp_path):
    other = tmp_path / "reshaped"
    shutil.copytree(shipped_shapes_model(), other)
    ema = load_file(str(other / "ema.safetensors"))
    key = sorted(k for k, v in ema.items() if v.dim() == 2)[0]
    save_file({**ema, key: ema[key][:-1]}, str(other / "ema.safetensors"))
    return other, f"their weights differ ({key}"


def _truncated_ae(tmp_path):
    other = tmp_path / "truncated-ae"
    shutil.copytree(shipped_shapes_model(), other)
    data = (other / "ae.safetensors").read_bytes()
    (other / "ae.safetensors").write_bytes(data[:100])
    return other, "ae.safetensors is not a readable safetensors file"


def _truncated(tmp_path):
    other = tmp_path / "truncated"
    shutil.copytree(shipped_shapes_model(), other)
    data = (other / "ema.safetensors").read_bytes()
    (other / "ema.safetensors").write_bytes(data[: len(data) // 3])
    return other, "is not a readable safetensors file"


def _bare(tmp_path):
    other = tmp_path / "bare"
    other.mkdir()
    shutil.copy(shipped_shapes_model() / "ema.safetensors", other)
    return other, "is not a whole model folder"


@pytest.mark.parametrize("case", [_reshaped, _truncated, _truncated_ae, _bare])
def test_a_finetune_of_other_tensors_or_unreadable_or_bare_is_refused_in_one_line(capsys, tmp_path, case):
    other, said = case(tmp_path)
    assert_refused(capsys, ["average", "shapes", other, "--out", tmp_path / "wise"], said, tmp_path)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--weight", "1.5"], "--weight 1.5: give the finetune's share, a number from 0 to 1"),
        (["--weight", "-0.1"], "a number from 0 to 1"),
    ],
)
def test_a_share_outside_0_to_1_is_refused(capsys, tmp_path, finetuned, args, said):
    assert_refused(capsys, ["average", "shapes", finetuned, "--out", tmp_path / "wise", *args], said, tmp_path)


def test_nothing_is_replaced_and_a_missing_finetune_is_named(capsys, tmp_path, finetuned):
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    assert_refused(capsys, ["average", "shapes", finetuned, "--out", kept], "already holds files", tmp_path)
    # the finetune's own folder as --out: refused, so the finetune is never overwritten by its average
    assert_refused(capsys, ["average", "shapes", finetuned, "--out", finetuned], "already holds files", tmp_path)
    missing = tmp_path / "runs" / "typo"
    assert_refused(capsys, ["average", "shapes", missing, "--out", tmp_path / "w"], "no such folder", tmp_path)


def test_a_run_whose_latest_names_no_checkpoint_is_one_line(capsys, tmp_path, finetuned):
    (finetuned / "latest").write_text("checkpoints/step-000020")
    said = "step-000020, which is not a complete checkpoint"
    assert_refused(capsys, ["average", "shapes", finetuned, "-o", tmp_path / "w"], said, tmp_path)


def test_weight_1_is_the_finetune_and_a_tensor_only_the_start_has_is_left_out(capsys, tmp_path, finetuned):
    start = tmp_path / "start-with-vit"
    shutil.copytree(shipped_shapes_model(), start)
    ema = load_file(str(start / "ema.safetensors"))
    save_file({**ema, "vit_model.extra.weight": torch.ones(3, 3)}, str(start / "ema.safetensors"))
    code, lines, _ = sigma(capsys, "average", start, finetuned, "--weight", "1", "--out", tmp_path / "late")
    assert code == 0, lines
    late = load_file(str(finetuned / "checkpoints" / "step-000010" / "ema.safetensors"))
    made = load_file(str(tmp_path / "late" / "ema.safetensors"))
    assert made.keys() == late.keys() and all(torch.equal(made[k], late[k]) for k in late)
    assert any("1 tensors of" in line and "vit_model.extra.weight" in line for line in lines), lines  # a warning


def test_the_start_may_be_a_bare_weights_file(tmp_path, finetuned):
    from sigma_studio.finetune.checkpoint import average_models

    weights = shipped_shapes_model() / "ema.safetensors"
    made = average_models(weights, finetuned / "checkpoints" / "step-000010", 0.0, tmp_path / "from-file")
    start = load_file(str(weights))
    assert all(torch.equal(v, start[k]) for k, v in load_file(str(made / "ema.safetensors")).items())


def test_an_uncached_start_offline_and_tiny_are_one_line(capsys, tmp_path, finetuned, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, lines, _ = sigma(capsys, "average", "sigma", finetuned, "-o", tmp_path / "w", "--cache-dir", tmp_path / "hf")
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error:") and "sigma download sigma" in lines[0]
    assert not (tmp_path / "w").exists()
    assert_refused(capsys, ["average", "tiny", finetuned, "-o", tmp_path / "w"], "START tiny is built with", tmp_path)
    said = "START no-such: no such directory"
    assert_refused(capsys, ["average", "no-such", finetuned, "-o", tmp_path / "w"], said, tmp_path)
