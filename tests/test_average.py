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


def _dropped(tmp_path):
    other = tmp_path / "dropped"
    shutil.copytree(shipped_shapes_model(), other)
    ema = load_file(str(other / "ema.safetensors"))
    save_file({k: v for k, v in ema.items() if k != sorted(ema)[0]}, str(other / "ema.safetensors"))
    return other, sorted(ema)[0]


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


@pytest.mark.parametrize("case", [_dropped, _truncated, _bare])
def test_a_finetune_that_is_not_the_start_s_architecture_is_refused_in_one_line(capsys, tmp_path, case):
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
