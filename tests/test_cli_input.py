"""Bad input on the command line: one specific message line, exit code 2, and no output file, in every command.

Each case runs the real entry point (``sigma_studio.cli.main.main``, as the ``sigma`` script does), so usage
errors (a value of the wrong type, an unknown option) are covered too. Everything here is refused before a model
is loaded.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from sigma_studio.cli.main import main
from sigma_studio.model import InputError, load_pipeline
from sigma_studio.model.weights.loader import save_pipeline

TINY = ["--model", "tiny", "--steps", "3"]


def sigma(capsys, *args: str) -> tuple[int, list[str], str]:
    """(exit code, non-empty stderr lines, stdout) of ``sigma ARGS``."""
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_.value.code, [line for line in err.splitlines() if line.strip()], out


def assert_refused(capsys, args, message: str, watch) -> None:
    before = sorted(p.relative_to(watch) for p in watch.rglob("*"))
    code, lines, _ = sigma(capsys, *args)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert "Traceback" not in lines[0]
    assert sorted(p.relative_to(watch) for p in watch.rglob("*")) == before  # nothing written, nothing created


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save("ref.png")
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "outdir").mkdir()
    return tmp_path


# -- --out in the four commands that write -------------------------------------------------------------------------
OUT_CASES = {
    "into a file": ("afile/result.png", "afile is a file"),
    "an existing folder": ("outdir", "is a folder"),
    "a read-only place": ("/proc/sigma-test/result.png", "not writable"),
}


@pytest.mark.parametrize("case", list(OUT_CASES))
def test_generate_out(capsys, work, case):
    out, message = OUT_CASES[case]
    assert_refused(capsys, ["generate", "a <img1>", "ref.png", "--out", out, *TINY], message, work)


@pytest.mark.parametrize("case", ["into a file", "a read-only place"])
def test_layout_out(capsys, work, case):
    out, message = OUT_CASES[case]
    out = out.rsplit("/", 1)[0] if case == "a read-only place" else out
    assert_refused(capsys, ["layout", "--out", out, "--canny", "ref.png", "--model", "tiny"], message, work)


def test_layout_refuses_to_overwrite_and_overwrites_when_asked(capsys, work):
    args = ["layout", "--out", "controls", "--canny", "ref.png", "--model", "tiny"]
    assert sigma(capsys, *args)[0] == 0
    assert_refused(capsys, args, "exists: pass --overwrite", work)
    assert sigma(capsys, *args, "--overwrite")[0] == 0


def test_existing_output_is_refused_unless_overwrite(capsys, work):
    assert sigma(capsys, "generate", "a cat", "--out", "o.png", *TINY)[0] == 0
    first = (work / "o.png").read_bytes()
    assert_refused(capsys, ["generate", "a dog", "--out", "o.png", *TINY], "o.png exists: pass --overwrite", work)
    assert (work / "o.png").read_bytes() == first
    assert sigma(capsys, "generate", "a dog", "--out", "o.png", "--overwrite", *TINY)[0] == 0
    assert (work / "o.png").read_bytes() != first


# -- settings ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cfg-text", "nan"], "--cfg-text"),
        (["--cfg-img", "inf"], "--cfg-img"),
        (["--shift", "inf"], "--shift"),
        (["--shift", "nan"], "--shift"),
        (["--seed", str(2**70)], "--seed"),
        (["--steps", str(10**20)], "--steps"),
        (["--steps", "abc"], "'--steps'"),
        (["--size", "big"], "--size"),
        (["--cfg-interval", "nan,1"], "--cfg-interval"),
        (["--bogus"], "No such option: --bogus"),
        (["--image", "img1"], "NAME=FILE"),
        (["--canny", "missing.png"], "Image file not found"),
    ],
)
def test_bad_settings(capsys, work, args, message):
    assert_refused(capsys, ["generate", "a <img1>", "ref.png", "--model", "tiny", *args], message, work)


# -- model directories ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    return save_pipeline(load_pipeline("tiny", visual_und=False), tmp_path_factory.mktemp("m") / "tiny")


def _broken(saved, work, edit) -> str:
    target = work / "model"
    shutil.copytree(saved, target)
    edit(target)
    return str(target)


def _llm(change):
    def edit(d):
        cfg = json.loads((d / "llm_config.json").read_text())
        change(cfg)
        (d / "llm_config.json").write_text(json.dumps(cfg))

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_llm(lambda c: c.pop("hidden_size")), "hidden_size"),
        (_llm(lambda c: c.update(num_attention_heads=3)), "num_attention_heads"),
        (lambda d: (d / "tokenizer.json").write_text("{garbage"), "tokenizer"),
    ],
    ids=["no hidden_size", "3 heads", "garbage tokenizer"],
)
def test_broken_model_directory(capsys, work, saved_tiny, edit, message):
    model = _broken(saved_tiny, work, edit)
    assert_refused(capsys, ["generate", "a cat", "--model", model, "--out", "o.png"], message, work)


# -- sources that are not there ------------------------------------------------------------------------------------
def test_batch_offline_dataset_id_and_missing_source(capsys, work, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(work / "hf"))
    (work / "hf").mkdir()
    args = ["batch", "someone/not-cached", "--out", "runs/eval", "--model", "tiny"]
    assert_refused(capsys, args, "someone/not-cached", work)
    assert_refused(capsys, ["batch", "./no-such-folder", "--out", "runs/eval", "--model", "tiny"], "no-such", work)


@pytest.mark.parametrize("case", ["into a file", "a read-only place"])
def test_batch_out(capsys, work, case):
    out, message = OUT_CASES[case]
    out = out.rsplit("/", 1)[0]
    assert_refused(capsys, ["batch", "./anything", "--out", out, "--model", "tiny"], message, work)


def test_finetune_bad_learning_rate_and_out(capsys, work):
    assert_refused(capsys, ["finetune", "--model", "tiny", "--lr", "-1", "--out", "run"], "--lr", work)
    assert_refused(capsys, ["finetune", "--model", "tiny", "--out", "afile"], "afile", work)


# -- the Python API ------------------------------------------------------------------------------------------------
def test_misspelled_keywords_name_the_nearest_valid_one(tiny_pipe):
    with pytest.raises(InputError, match="did you mean steps"):
        tiny_pipe("a cat", stpes=3)
    with pytest.raises(InputError, match="mode"):
        load_pipeline("tiny", mdoe="cpu")


def test_test_only_knobs_are_not_public():
    import inspect

    from sigma_studio.model import SigmaPipeline

    params = inspect.signature(SigmaPipeline.__call__).parameters
    assert "keep_contexts" not in params and "batch_branches" not in params and "insertion" not in params


def test_version_and_tokens(capsys):
    code, _, out = sigma(capsys, "--version")
    assert code == 0 and out.startswith("sigma-studio ")
    code, _, out = sigma(capsys, "tokens")
    assert code == 0 and all(t in out for t in ("<style>", "<select>", "<layout>"))


def test_generate_help_shows_defaults_from_the_dataclasses(capsys):
    from sigma_studio.model import GenerationConfig

    os.environ.setdefault("COLUMNS", "200")
    code, _, out = sigma(capsys, "generate", "--help")
    g = GenerationConfig()
    assert code == 0 and f"[default: {g.steps}]" in out and f"[default: {g.timestep_shift}]" in out
    assert f"[default: {g.cfg_text_scale}]" in out and "Examples" in out
    assert "--json <bool>" not in " ".join(out.split())
