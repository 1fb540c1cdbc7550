"""Bad input to the model layer and the CLI commands around it: one line, a SigmaError, exit code 2, nothing created.

Damaged checkpoint directories, non-finite or out-of-range generation settings, misspelt loader keywords, bad
finetune options and output folders, an uncached dataset offline, the loading-mode judgement of ``sigma info``,
and the import graph of the loader and the modes.
"""

from __future__ import annotations

import ast
import inspect
import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sigma_studio.model import CheckpointError, GenerationConfig, InputError, SigmaError, load_pipeline
from sigma_studio.model.errors import MissingDependencyError, UnsupportedModeError
from sigma_studio.model.hub import WeightsUnavailableError
from sigma_studio.model.weights.loader import save_pipeline

GiB = 1024**3


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_pipe):
    return save_pipeline(tiny_pipe, tmp_path_factory.mktemp("bad-input") / "tiny")


def _edit(name: str, **changes):
    """A corruption that sets (or, with None, deletes) keys of one JSON file."""

    def corrupt(model_dir):
        data = json.loads((model_dir / name).read_text())
        for key, value in changes.items():
            if value is None:
                data.pop(key)
            else:
                data[key] = value
        (model_dir / name).write_text(json.dumps(data))

    return corrupt


def _write(name: str, text: str):
    return lambda model_dir: (model_dir / name).write_text(text)


def test_every_sigma_error_exits_2():
    errors = [
        InputError("x"),
        CheckpointError("x"),
        UnsupportedModeError("x"),
        WeightsUnavailableError("x"),
        MissingDependencyError("peft", "train", "LoRA"),
    ]
    assert all(e.exit_code == 2 for e in errors) and SigmaError.exit_code == 2


# -- damaged checkpoint directories --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("corrupt", "words"),
    [
        (_edit("llm_config.json", hidden_size=None), ["llm_config.json", "lacks hidden_size"]),
        (_edit("llm_config.json", vocab_size=None), ["llm_config.json", "lacks vocab_size"]),
        (_edit("llm_config.json", num_attention_heads=3), ["llm_config.json", "hidden_size 64", "heads 3"]),
        (_edit("llm_config.json", num_key_value_heads=3), ["llm_config.json", "num_key_value_heads 3"]),
        (_edit("llm_config.json", hidden_size="64"), ["llm_config.json", "hidden_size '64'", "whole number"]),
        (_edit("llm_config.json", num_hidden_layers=2.5), ["llm_config.json", "num_hidden_layers 2.5"]),
        (_edit("llm_config.json", num_attention_heads=0), ["llm_config.json", "num_attention_heads 0"]),
        (_edit("llm_config.json", rope_theta="big"), ["llm_config.json", "rope_theta 'big'"]),
        (_write("llm_config.json", "[64, 2]"), ["llm_config.json", "JSON object"]),
        (_write("llm_config.json", "{hidden"), ["llm_config.json", "not valid JSON"]),
        (_edit("vit_config.json", hidden_size=None), ["vit_config.json", "lacks hidden_size"]),
        (_edit("vit_config.json", num_attention_heads=3), ["vit_config.json", "hidden_size 32", "heads 3"]),
        (_edit("vit_config.json", patch_size=0), ["vit_config.json", "patch_size 0"]),
        (_edit("vit_config.json", image_size="big"), ["vit_config.json", "image_size 'big'"]),
        (_write("tokenizer.json", "garbage{"), ["tokenizer", "cannot be read"]),
        (_write("tokenizer.json", '{"version": "1.0"}'), ["tokenizer", "cannot be read"]),
        (_edit("sigma_config.json", arch={"vae_transform": {"size": 1}}), ["sigma_config.json", "vae_transform"]),
    ],
)
def test_damaged_checkpoint_is_one_checkpoint_error(tmp_path, saved, corrupt, words):
    model_dir = tmp_path / "model"
    shutil.copytree(saved, model_dir)
    corrupt(model_dir)
    with pytest.raises(CheckpointError) as err:
        load_pipeline(model_dir, mode="cpu")
    message = str(err.value)
    assert "\n" not in message and "re-download" in message
    assert all(w in message for w in words), message


def test_damaged_checkpoint_in_the_cli_is_one_line_and_exit_2(tmp_path, saved):
    from sigma_studio.cli.main import app

    model_dir = tmp_path / "model"
    shutil.copytree(saved, model_dir)
    _edit("llm_config.json", num_attention_heads=3)(model_dir)
    result = CliRunner().invoke(app, ["generate", "a cat", "--model", str(model_dir), "--out", str(tmp_path / "o.png")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert any("not divisible by num_attention_heads 3" in line for line in lines), result.output
    assert "Traceback" not in result.output and not (tmp_path / "o.png").exists()


# -- generation settings -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(
    ("field", "option"),
    [
        ("cfg_text_scale", "--cfg-text"),
        ("cfg_img_scale", "--cfg-img"),
        ("timestep_shift", "--shift"),
        ("cfg_renorm_min", "--renorm-min"),
        ("cfg_interval", "--cfg-interval"),
    ],
)
def test_non_finite_settings_name_the_option(field, option, value):
    setting = (0.0, value) if field == "cfg_interval" else value
    with pytest.raises(InputError, match=f"{option} must be a finite number"):
        GenerationConfig(**{field: setting})


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"seed": 2**70}, "--seed must be a whole number from 0 to 2\\*\\*63 - 1"),
        ({"seed": -1}, "--seed"),
        ({"seed": 1.5}, "--seed"),
        ({"steps": 10**20}, "--steps must be at most 1000"),
        ({"steps": 2.5}, "--steps must be a whole number"),
        ({"steps": 1}, "--steps must be at least 2"),
        ({"size": (64.5, 64)}, "--size must be two whole numbers"),
        ({"size": (64,)}, "--size must be two whole numbers"),
        ({"size": (0, 64)}, "--size must be positive"),
        ({"cfg_interval": (0.2,)}, "--cfg-interval takes two numbers"),
        ({"timestep_shift": 0.0}, "--shift must be positive"),
    ],
)
def test_out_of_range_settings_name_the_option(settings, match):
    with pytest.raises(InputError, match=match):
        GenerationConfig(**settings)


def test_edge_settings_are_accepted():
    GenerationConfig(seed=2**63 - 1, steps=1000, size=(64, 48), cfg_interval=(0.0, 1.0))


# -- load_pipeline keywords and the one meta model -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "suggestion"),
    [({"mdoe": "cpu"}, "Did you mean mode?"), ({"gruop_mask": True}, "Did you mean group_mask?")],
)
def test_misspelt_keyword_suggests_the_nearest(kwargs, suggestion):
    with pytest.raises(InputError, match=suggestion):
        load_pipeline("tiny", **kwargs)


def test_arch_and_loader_keywords_still_work(saved):
    for source in (saved, "tiny"):
        pipe = load_pipeline(source, mode="cpu", group_mask=True, vae_scale_factor=0.5)
        assert pipe.arch.group_mask is True and pipe.arch.vae.scale_factor == 0.5


def test_load_builds_the_meta_model_once(saved, monkeypatch):
    from sigma_studio.model.weights import loader

    calls = []
    real = loader.build_model

    def counting(arch, device="meta", dtype=None, **kw):
        calls.append(str(device))
        return real(arch, device, **({"dtype": dtype} if dtype is not None else {}), **kw)

    monkeypatch.setattr(loader, "build_model", counting)
    load_pipeline(saved, mode="cpu")
    assert calls == ["meta"]


def _imports(module) -> set[str]:
    """The modules that a module's source imports, anywhere in it (``.loader`` for a relative import)."""
    tree = ast.parse(inspect.getsource(module))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_import_cycle_between_config_modes_and_loader():
    from sigma_studio.model import config
    from sigma_studio.model.weights import modes

    assert not {".modes", ".loader"} & _imports(config)
    assert ".loader" not in _imports(modes)
    assert modes.MODES is config.MODES and "cpu" in modes.MODES


# -- finetune options and output folders ---------------------------------------------------------------------------
@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if finetuning gets as far as loading a model."""
    from sigma_studio.finetune import build

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(build, "load", refuse)


def _finetune(tmp_path, *args):
    from sigma_studio.cli.main import app

    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return CliRunner().invoke(app, ["finetune", "--model", "tiny", "--dataset", str(data), *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "-1"], "--lr must be above 0"),
        (["--lr", "0"], "--lr must be above 0"),
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--min-lr", "1"], "--min-lr 1.0 is above --lr"),
        (["--steps", "0"], "--steps must be a whole number of at least 1"),
        (["--steps", "-5"], "--steps must be a whole number of at least 1"),
        (["--max-tokens", "0"], "--max-tokens must be a whole number of at least 1"),
        (["--warmup", "-1"], "--warmup must be a whole number of at least 0"),
        (["--save-every", "-1"], "--save-every"),
        (["--ema", "1"], "--ema must be in [0, 1)"),
        (["--held-out", "nan"], "--held-out must be a finite number"),
        (["--seed", "-3"], "--seed"),
        (["--family-weight", "edit=inf"], "--family-weight edit must be a finite number"),
        (["--family-shift", "edit=0"], "--family-shift edit must be"),
        (["--family-shift", "edit"], "--family-shift 'edit' should be FAMILY=NUMBER, e.g. select=10"),
        (["--lora", "--lora-rank", "0"], "--lora-rank"),
        (["--lora", "--lora-alpha", "nan"], "--lora-alpha must be a finite number"),
    ],
)
def test_bad_finetune_option_is_one_line_before_loading(tmp_path, no_model_load, args, message):
    out = tmp_path / "run"
    result = _finetune(tmp_path, "--out", str(out), *args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and message in lines[0], result.output
    assert not out.exists()


def _read_only_dir(tmp):
    return Path("/proc/sigma-test-run")  # /proc takes no new files, even from root (unlike a chmod-ed folder)


@pytest.mark.parametrize(
    ("make_out", "message"),
    [
        (lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt", "is a file, not a folder"),
        (lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt" / "run", "file.txt is a file"),
        (_read_only_dir, "is not writable"),
    ],
    ids=["file", "under-a-file", "read-only-parent"],
)
def test_unusable_finetune_out_is_one_line_and_creates_nothing(tmp_path, no_model_load, make_out, message):
    out = make_out(tmp_path)
    (tmp_path / "data").mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = _finetune(tmp_path, "--out", str(out), "--steps", "2")
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and message in lines[0], result.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# -- datasets offline ----------------------------------------------------------------------------------------------
def test_uncached_dataset_offline_is_one_line(tmp_path, monkeypatch):
    from sigma_studio.model.data.dataset import parquet_files
    from sigma_studio.model.hub import HubOptions

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as err:
        parquet_files("someone/nonexistent-dataset", HubOptions(cache_dir=str(tmp_path / "hf")))
    message = str(err.value)
    assert "\n" not in message and "someone/nonexistent-dataset" in message
    assert "network access" in message and "local folder of parquet files" in message


def test_uncached_dataset_offline_in_finetune_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from sigma_studio.cli.main import app

    out = tmp_path / "run"
    args = ["finetune", "--model", "tiny", "--dataset", "someone/nonexistent-dataset", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--steps", "2", "--cache-dir", str(tmp_path / "hf")])
    assert result.exit_code == 2, result.output
    assert "someone/nonexistent-dataset" in result.output and "Traceback" not in result.output


# -- sigma info ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("available", "possible"), [(16 * GiB, False), (200 * GiB, True)])
def test_info_judges_cpu_mode_by_memory(monkeypatch, tmp_path, available, possible):
    from sigma_studio.cli import info
    from sigma_studio.model.weights.modes import DeviceInfo

    monkeypatch.setattr(info, "cpu_memory", lambda: (available, 256 * GiB))
    monkeypatch.setattr(info, "probe", lambda: DeviceInfo())  # no GPU: auto would choose cpu
    collected = info.collect(tmp_path)
    assert collected.cpu_memory == (available / GiB, 256.0)
    if possible:
        assert collected.modes["cpu"] == "yes"
    else:
        assert "needs about 53 GiB" in collected.modes["cpu"] and "16.0 GiB available" in collected.modes["cpu"]
        assert "needs about 53 GiB" in collected.auto[1]


def test_cpu_memory_is_read():
    from sigma_studio.cli.info import cpu_memory

    available, total = cpu_memory()
    assert 0 < available <= total
