"""Issue 20 (hardening): hostile input to ``sigma generate`` and the model's request and config checks.

Each case is refused with one ``error:`` line and exit code 2, before any model work where it can be, and nothing
is written: outputs that would replace a device or a pipe, settings that turn the picture black, non-finite
boxes, Canny settings that crash or hang, over-long or folder-like output names, malformed records, options
that would be silently ignored, and prompts that grow the warnings without bound. Runs use ``--model shapes``
(a tiny shipped model, ~0.5 s on a CPU).
"""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from sigma_studio.cli.main import app
from sigma_studio.model import GenerationConfig, InputError, SigmaError
from sigma_studio.model.files import atomic_dir, atomic_write
from sigma_studio.model.request.prompt import MAX_PROMPT_CHARS, MAX_PROMPT_TAGS, parse_prompt
from sigma_studio.model.request.record import RECORD_KEY
from sigma_studio.model.request.structure import ControlSpec

SHAPES = ["--model", "shapes", "--steps", "2", "--seed", "1"]


def run(*args: str):
    """(exit code, non-empty output lines) of ``sigma ARGS`` through Typer's CliRunner."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, [line for line in result.output.splitlines() if line.strip()]


def assert_refused(args, message: str, watch) -> None:
    """One error line naming ``message``, exit code 2, no traceback, nothing written under ``watch``."""
    before = sorted(p.relative_to(watch) for p in watch.rglob("*"))
    code, lines = run(*args)
    assert code == 2, lines
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], lines
    assert not any("Traceback" in line for line in lines), lines
    assert sorted(p.relative_to(watch) for p in watch.rglob("*")) == before


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save("ref.png")
    return tmp_path


# -- 1. an output replaces only a regular file ----------------------------------------------------------------------
def test_out_refuses_a_pipe_and_a_link_to_a_device(work):
    os.mkfifo(work / "pipe.png")
    (work / "null.png").symlink_to(os.devnull)
    assert_refused(["generate", "a red circle", "--out", "pipe.png", "--overwrite", *SHAPES], "named pipe", work)
    assert_refused(["generate", "a red circle", "--out", "null.png", "--overwrite", *SHAPES], "device", work)
    assert stat.S_ISFIFO(os.lstat(work / "pipe.png").st_mode) and (work / "null.png").is_symlink()
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_atomic_write_refuses_non_regular_files_for_every_front_end(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "folder").mkdir()
    for target in ("pipe", "folder"):
        with pytest.raises(InputError, match="not a regular file"):
            atomic_write(tmp_path / target, lambda f: f.write(b"x"))
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe").st_mode) and sorted(os.listdir(tmp_path)) == ["folder", "pipe"]
    (tmp_path / "plain").write_text("old")
    atomic_write(tmp_path / "plain", lambda f: f.write(b"new"))  # a regular file is still replaced
    assert (tmp_path / "plain").read_text() == "new"


def test_atomic_dir_swaps_whole_and_a_failed_fill_is_one_line(tmp_path):
    """A model folder is swapped in whole; a fill that fails on an OS error (here: the disk full) is one InputError,
    the previous folder kept and no temporary folder left beside it."""
    target = tmp_path / "model"
    atomic_dir(target, lambda d: (d / "a.txt").write_text("old"))

    def full(folder):
        (folder / "a.txt").write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(InputError, match=r"model cannot be written \(No space left on device\)"):
        atomic_dir(target, full)
    assert os.listdir(tmp_path) == ["model"] and (target / "a.txt").read_text() == "old"
    atomic_dir(target, lambda d: (d / "b.txt").write_text("new"))
    assert os.listdir(target) == ["b.txt"] and os.listdir(tmp_path) == ["model"]


# -- 2. bounded settings, and never a non-finite picture ------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cfg-text", "1e308"], "--cfg-text must be from 0 to 100"),
        (["--cfg-img", "1e308"], "--cfg-img must be from 0 to 100"),
        (["--shift", "1e308"], "--shift must be positive, from 0.01 to 100"),
        (["--shift", "1e-300"], "--shift must be positive, from 0.01 to 100"),
    ],
)
def test_settings_beyond_their_range_are_refused(work, args, message):
    assert_refused(["generate", "a red circle", *SHAPES, *args], message, work)


def test_config_bounds_name_the_flag():
    with pytest.raises(InputError, match="--cfg-text"):
        GenerationConfig(cfg_text_scale=1e308)
    with pytest.raises(InputError, match="--cfg-interval takes two numbers"):
        GenerationConfig(cfg_interval=5)
    GenerationConfig(cfg_text_scale=100.0, cfg_img_scale=0.0, timestep_shift=0.01)  # the edges are accepted


def test_non_finite_samples_are_an_error_not_a_black_png(work, monkeypatch):
    from sigma_studio.model.run import batching

    nan = lambda trs, *a, **k: [torch.full_like(t.x, float("nan")) for t in trs]  # noqa: E731
    monkeypatch.setattr(batching, "denoise_batch", nan)
    assert_refused(["generate", "a red circle", "--out", "o.png", *SHAPES], "non-finite values (NaN/inf)", work)


def test_a_non_finite_decoded_picture_is_an_error(work, monkeypatch):
    from sigma_studio.model.run.pipeline import SigmaPipeline

    monkeypatch.setattr(SigmaPipeline, "decode_raw", lambda self, x, grid: torch.full((1, 3, 64, 64), float("inf")))
    assert_refused(["generate", "a red circle", "--out", "o.png", *SHAPES], "the decoder produced non-finite", work)


# -- 3. boxes are finite ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--box", "nan,0,1,1"], "not a finite number"),
        (["--box", "0,0,inf,1"], "not a finite number"),
        (["--subject", "ref.png@box=0,nan,1,1"], "not a finite number"),
        (["--subject", "ref.png@box3d=0,0,3,0,1,1"], "must be positive"),
        (["--subject", "ref.png@box3d=0,0,3,1e300,1,1"], "within 1000 metres"),
    ],
)
def test_boxes_must_be_finite_and_sensible(work, args, message):
    assert_refused(["generate", "a red circle", *SHAPES, *args], message, work)


# -- 4. Canny settings are checked before any work ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--canny-blur", "-3"], "--canny-blur must be a whole number from 0 to 31"),
        (["--canny-blur", "100001"], "--canny-blur must be a whole number from 0 to 31"),
        (["--canny-blur", "4"], "--canny-blur must be odd"),
        (["--canny-low", "-1"], "--canny-low must be a whole number from 0 to 1000"),
        (["--canny-high", "5000"], "--canny-high must be a whole number from 0 to 1000"),
    ],
)
def test_canny_settings_are_bounded(work, args, message):
    assert_refused(["generate", "a red circle", "--canny", "ref.png", *SHAPES, *args], message, work)


def test_control_spec_checks_canny_itself():
    with pytest.raises(InputError, match="--canny-blur"):
        ControlSpec(canny="x.png", canny_blur=100001)


# -- 5. output names -------------------------------------------------------------------------------------------------
def test_out_name_too_long_is_one_line(work):
    assert_refused(["generate", "a red circle", "--out", "a" * 300 + ".png", *SHAPES], "at most 255", work)
    assert_refused(["layout", "--out", "d" * 300, "--canny", "ref.png", "--model", "shapes"], "at most 255", work)
    assert_refused(["generate", "a <img1>", "r" * 300 + ".png", *SHAPES], "Image file not found", work)


@pytest.mark.parametrize("out", ["newdir/", "existing/"])
def test_out_naming_a_folder_is_refused(work, out):
    (work / "existing").mkdir()
    assert_refused(["generate", "a red circle", "--out", out, *SHAPES], "is a folder", work)


# -- 6. malformed records --------------------------------------------------------------------------------------------
def _record_png(path, **changes) -> str:
    record = {"prompt": "a red circle", "config": {"steps": 2, "seed": 1, "size": [64, 64]}, "model": "shapes"}
    info = PngImagePlugin.PngInfo()
    info.add_text(RECORD_KEY, json.dumps(record | changes))
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    return str(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"config": []}, "config must be an object"),
        ({"images": "abc"}, "images must be a list"),
        ({"images": ["abc"]}, "image 1 must be an object"),
        ({"prompt": 12345}, "prompt must be a text"),
        ({"controls": {"boxes": 5}}, "--box values must be a list"),
        ({"config": {"cfg_interval": 5}}, "--cfg-interval takes two numbers"),
    ],
)
def test_malformed_record_is_one_line(work, changes, message):
    png = _record_png(work / "x.png", **changes)
    assert_refused(
        ["generate", "--from", png, "--out", "o.png", "--steps", "2"], "record is malformed: " + message, work
    )


# -- 7. options that only mean something with another one ------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--compose"], "--compose changes how subjects are placed: give at least one --subject"),
        (["--faces"], "--faces changes how subjects are placed: give at least one --subject"),
        (["--depth", "ref.png", "--depth-map", "ref.png"], "give only one of them"),
        (["--overwrite"], "--overwrite replaces an existing --out file"),
        (["--max-gpu-memory", "10GiB", "--mode", "cpu"], "--mode cpu ignores it"),
        (["--offload-dir", "off", "--mode", "cpu"], "--mode cpu never offloads"),
    ],
)
def test_options_that_would_be_ignored_are_refused(work, args, message):
    assert_refused(["generate", "a red circle", *SHAPES, *args], message, work)


# -- 8. prompt size and warnings -------------------------------------------------------------------------------------
def test_a_huge_prompt_is_refused_before_parsing(work):
    message = f"the prompt is 27000 characters; at most {MAX_PROMPT_CHARS} are accepted"
    assert_refused(["generate", "<subject>" * 3000, *SHAPES], message, work)
    many = "<subject>" * (MAX_PROMPT_TAGS + 1)
    assert_refused(["generate", many, *SHAPES], f"at most {MAX_PROMPT_TAGS} are accepted", work)


def test_unbound_tokens_give_one_short_warning(work):
    prompt = "a <style> red <texture> circle " + "x" * 5000 + " <lighting> end"
    code, lines = run("generate", prompt, "--out", "o.png", *SHAPES)
    assert code == 0, lines
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "3 attribute tokens" in warnings[0] and len(warnings[0]) < 300, warnings


def test_parse_prompt_collapses_and_shortens_warnings():
    parsed = parse_prompt("a <style> b " * 20 + "z" * 2000, 0)
    assert len(parsed.warnings) == 1 and "20 attribute tokens" in parsed.warnings[0]
    assert len(parsed.warnings[0]) < 300
    with pytest.raises(InputError, match="characters; at most"):
        parse_prompt("x" * (MAX_PROMPT_CHARS + 1), 0)


def test_the_pipeline_error_is_a_sigma_error():
    from sigma_studio.model.run.pipeline import check_finite

    check_finite(torch.zeros(3), "sampler")
    with pytest.raises(SigmaError, match="the sampler produced non-finite values"):
        check_finite(torch.tensor([0.0, float("nan")]), "sampler")
