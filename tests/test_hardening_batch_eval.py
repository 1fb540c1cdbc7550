"""Issue 20 (hardening): ``sigma batch`` refuses rows that place images they lack, redoes broken outputs on resume,
refuses out-of-range numbers and says in its exit code when rows failed; ``sigma eval`` scores an output only when
it is its row's own, at the size its record names, says when it resizes to the ground truth, and refuses a folder
where nothing can be scored."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from sigma_studio.cli.batch import EXIT_ALL_FAILED, EXIT_SOME_FAILED
from sigma_studio.cli.main import main
from sigma_studio.model import InputError
from sigma_studio.model.data.batch import run_batch
from sigma_studio.model.data.dataset import iter_rows, parquet_files
from tests.test_batch import CONFIG, _failures, _parquet, _png

GOOD = [(f"Make it <style>like <image_1> number {k}", [_png(40, 56, k), _png(64, 48, 10 + k)]) for k in range(3)]
PIXELS = "psnr,ssim"  # offline metrics against the ground truth


def sigma(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_.value.code, " ".join(out.split()), " ".join(err.split())  # as one line: Rich wraps long lines


def _batch(pipe, data, out):
    return run_batch(pipe, iter_rows(parquet_files(str(data))), out, CONFIG)


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_pipe):
    """Three good rows generated once; each test works on its own copy (``fresh``)."""
    root = tmp_path_factory.mktemp("made")
    (root / "data").mkdir()
    _parquet(root / "data" / "s.parquet", GOOD)
    summary = _batch(tiny_pipe, root / "data", root / "out")
    assert summary.generated == 3
    return root


@pytest.fixture
def fresh(made, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(made / "out", out)
    return made / "data", out


# --- sigma batch ------------------------------------------------------------------------------------------------


def test_a_row_that_places_an_image_it_lacks_fails(tmp_path, tiny_pipe):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    rows = [
        ("Put <id>the man <image_3> on a beach", [_png(64, 48, 1), _png(64, 48, 2)]),  # only 2 images
        ("Put <id>the man <img1> on a beach", [_png(64, 48, 1), _png(64, 48, 2)]),  # not SIGMA's placeholder
        GOOD[0],
    ]
    _parquet(data / "s.parquet", rows)
    summary = _batch(tiny_pipe, data, out)
    assert (summary.generated, summary.failed) == (1, 2)
    failures = {f["row_id"]: f["error"] for f in _failures(out)}
    assert "places image 3, but the row has 2 image(s)" in failures["s-000000"]
    assert "<img1> is not a placeholder of SIGMA data" in failures["s-000001"]
    assert sorted(p.name for p in out.glob("s-*.png") if ".gt." not in p.name) == ["s-000002.png"]


def test_a_broken_or_foreign_output_is_generated_again_on_resume(fresh, tiny_pipe):
    data, out = fresh
    first, second, third = (out / f"s-00000{k}.png" for k in range(3))
    want = {p.name: _pixels(p) for p in (first, second, third)}
    first.write_bytes(first.read_bytes()[:-200])  # cut off: the end of the image data is missing
    shutil.copy(third, second)  # another row's output under this row's name
    summary = _batch(tiny_pipe, data, out)
    assert (summary.generated, summary.skipped_existing, summary.redone, summary.failed) == (2, 1, 2, 0)
    assert all(np.array_equal(_pixels(p), want[p.name]) for p in (first, second, third))
    assert json.loads((out / "summary.json").read_text())["this_run"]["redone"] == 2
    again = _batch(tiny_pipe, data, out)  # now everything is whole: nothing to redo
    assert (again.skipped_existing, again.redone) == (3, 0)


@pytest.mark.parametrize("limit", ["-1", "0"])
def test_an_out_of_range_limit_is_refused_before_anything_is_made(capsys, made, tmp_path, limit):
    code, _, err = sigma(capsys, "batch", made / "data", "--out", tmp_path / "o", "--limit", limit,
                         "--model", "tiny", "--steps", "2")  # fmt: skip
    assert code == 2 and f"--limit {limit} is out of range: give 1 or more" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputError, match="--limit"):
        run_batch(None, iter([]), tmp_path / "o", CONFIG, limit=int(limit))


def test_failed_rows_set_the_exit_code_and_the_summary_line(capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _parquet(data / "s.parquet", [("A cat <image_1>", [b"not an image", _png(64, 48, 1)]), GOOD[0]])
    args = ["--model", "tiny", "--steps", "2"]
    code, out, _ = sigma(capsys, "batch", data, "--out", tmp_path / "some", *args)
    assert code == EXIT_SOME_FAILED == 4 and "1 failed" in out and "some rows failed" in out
    code, out, _ = sigma(capsys, "batch", data, "--out", tmp_path / "all", "--limit", "1", *args)
    assert code == EXIT_ALL_FAILED == 3 and "every row failed" in out


# --- sigma eval -------------------------------------------------------------------------------------------------


def test_swapped_outputs_are_not_scored_and_named(capsys, fresh):
    _, out = fresh
    a, b = out / "s-000000.png", out / "s-000001.png"
    a.rename(out / "x.png")
    b.rename(a)
    (out / "x.png").rename(b)
    code, stdout, err = sigma(capsys, "eval", out, "--metrics", PIXELS)
    assert code == EXIT_SOME_FAILED, err
    assert "s-000000 is not scored: s-000000.png carries the record of row 's-000001'" in err
    assert "s-000001 is not scored" in err and "2 rows not scored" in stdout
    data = json.loads((out / "metrics.json").read_text())
    assert sorted(data["unscored"]) == ["s-000000", "s-000001"] and list(data["rows"]) == ["s-000002"]


def test_a_resized_output_is_refused_and_a_resize_to_the_truth_is_stated(capsys, fresh):
    _, out = fresh
    path = out / "s-000000.png"
    img = Image.open(path)
    info = PngImagePlugin.PngInfo()
    for key, value in img.text.items():  # the record travels with the resized picture
        info.add_text(key, value)
    img.resize((17, 300)).save(path, pnginfo=info)
    code, stdout, err = sigma(capsys, "eval", out, "--metrics", PIXELS)
    assert code == EXIT_SOME_FAILED, err
    assert "s-000000.png is 17x300, but its record says it was generated at 80x64" in err
    data = json.loads((out / "metrics.json").read_text())
    assert "s-000000" not in data["rows"] and data["rows"]["s-000001"]["psnr"] is not None
    # the tiny model generates 80x64 for a 64x48 truth: the comparison at the truth's size is stated
    assert data["resized_to_truth"] == {"s-000001": "80x64 -> 64x48", "s-000002": "80x64 -> 64x48"}
    assert "resized: 2 outputs differ in size from their ground truth" in stdout


def test_nothing_to_score_is_an_error(capsys, fresh):
    _, out = fresh
    for gt in out.glob("*.gt.png"):
        gt.unlink()
    code, _, err = sigma(capsys, "eval", out, "--metrics", PIXELS)
    assert code == 2 and "nothing in" in err and "need a ground truth (<row>.gt.png)" in err
    assert "Traceback" not in err and not (out / "metrics.json").exists()
    for png in out.glob("s-*.png"):
        png.write_bytes(png.read_bytes()[:100])
    code, _, err = sigma(capsys, "eval", out, "--metrics", PIXELS)
    assert code == 2 and "none of its 3 outputs can be scored" in err and "not a complete PNG" in err
