"""The loader on checkpoint directories made by the tests: round trips, strictness and every error path."""

from __future__ import annotations

import shutil

import pytest
import torch

from sigma_studio.model import CheckpointError, load_pipeline, read_arch_config
from sigma_studio.model.hub import WeightsUnavailableError
from sigma_studio.model.weights.loader import save_pipeline
from tests.conftest import fixture_dir, requires_fixture


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_pipe):
    return save_pipeline(tiny_pipe, tmp_path_factory.mktemp("ckpt") / "tiny")


def test_round_trip_gives_identical_images(saved, tiny_pipe):
    loaded = load_pipeline(saved)
    assert loaded.arch == tiny_pipe.arch
    a = tiny_pipe("a cat", steps=3, seed=4).latents
    b = loaded("a cat", steps=3, seed=4).latents
    assert torch.equal(a, b)


@requires_fixture
def test_fixture_loads_with_and_without_vit():
    model_dir = fixture_dir() / "model"
    assert read_arch_config(model_dir).vit is not None
    no_vit = load_pipeline(model_dir, visual_und=False)
    assert no_vit.arch.vit is None and not hasattr(no_vit.model, "vit_model")


def test_weights_elsewhere_and_vit_request_on_a_vit_free_file(tmp_path, saved):
    sigma_like = load_pipeline(saved, visual_und=False)
    weights_only = save_pipeline(sigma_like, tmp_path / "sigma") / "ema.safetensors"
    pipe = load_pipeline(saved, weights=weights_only)  # configs and tokenizer from one dir, weights from another
    assert pipe.arch.vit is None and pipe.arch.default_layout == "released"
    with pytest.raises(CheckpointError, match="have no ViT"):
        read_arch_config(saved, weights=weights_only, visual_und=True)


def test_weights_only_directory_needs_the_backbone_configs(tmp_path, saved, monkeypatch):
    """A directory with weights but no configs (the SIGMA release) takes BAGEL's from the cache; offline and
    uncached, the user gets one line naming what is missing and the command that fetches it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    weights_only = tmp_path / "sigma"
    weights_only.mkdir()
    shutil.copy(saved / "ema.safetensors", weights_only)
    with pytest.raises(WeightsUnavailableError) as err:
        load_pipeline(weights_only, cache_dir=str(tmp_path / "hf"))
    msg = str(err.value)
    assert "ByteDance-Seed/BAGEL-7B-MoT" in msg and "sigma download" in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("remove", "match"),
    [
        ("ema.safetensors", "No weights|neither llm_config.json nor"),
        ("ae.safetensors", "ae.safetensors is missing"),
        ("tokenizer.json", "No tokenizer"),
    ],
)
def test_missing_files(tmp_path, saved, remove, match):
    broken = shutil.copytree(saved, tmp_path / "broken")
    (broken / remove).unlink()
    with pytest.raises(CheckpointError, match=match):
        load_pipeline(broken)


def test_corrupt_weights(tmp_path, saved):
    broken = shutil.copytree(saved, tmp_path / "corrupt")
    (broken / "ema.safetensors").write_bytes(b"\x00" * 32)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_pipeline(broken)


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no such directory, and not a Hugging Face repo id"):
        load_pipeline(tmp_path / "nowhere")


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, tiny_pipe, monkeypatch):
    target = save_pipeline(tiny_pipe, tmp_path / "run")
    before = sorted(p.name for p in target.iterdir())

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_pipeline(tiny_pipe, target)
    assert sorted(p.name for p in target.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    load_pipeline(target)


def test_row_reads_of_a_weights_file(tmp_path):
    """The sharded load reads a rank's rows with plain file reads: the same values as the whole tensor's rows,
    cast on the way, and a truncated file is a CheckpointError."""
    from safetensors.torch import save_file

    from sigma_studio.model.errors import CheckpointError
    from sigma_studio.model.weights.loader import _TensorReader

    tensors = {"a": torch.randn(7, 3, 2), "b": torch.randn(5).to(torch.bfloat16)}
    save_file(tensors, tmp_path / "w.safetensors")
    read = _TensorReader(tmp_path / "w.safetensors", None)
    assert torch.equal(read.rows("a", 2, 5), tensors["a"][2:5]) and torch.equal(read.rows("b", 1, 4), tensors["b"][1:4])
    assert _TensorReader(tmp_path / "w.safetensors", torch.float32).rows("b", 0, 5).dtype == torch.float32
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        (tmp_path / "cut.safetensors").write_bytes((tmp_path / "w.safetensors").read_bytes()[:-8])
        _TensorReader(tmp_path / "cut.safetensors", None)
    (tmp_path / "w.safetensors").write_bytes((tmp_path / "w.safetensors").read_bytes()[:-8])  # cut after opening
    with pytest.raises(CheckpointError, match="truncated"):
        read.rows("b", 0, 5)
