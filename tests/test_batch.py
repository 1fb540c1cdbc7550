"""``run_batch`` on parquet made here: failure records across reruns, the folder-wide summary, and bad sources or
output folders that must leave nothing behind."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from sigma_studio.model import GenerationConfig, InputError
from sigma_studio.model.data.batch import run_batch
from sigma_studio.model.data.dataset import SigmaRow, iter_rows, parquet_files
from sigma_studio.model.files import check_output_dir

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

CONFIG = GenerationConfig(steps=2, seed=0, layout="trained")


def _png(w: int, h: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _parquet(path, rows) -> None:
    table = pa.table(
        {
            "instruction_list": pa.array([[[r[0]]] for r in rows], type=pa.list_(pa.list_(pa.string()))),
            "image_list": pa.array([r[1] for r in rows], type=pa.list_(pa.binary())),
        }
    )
    pq.write_table(table, path)


def _data(folder, second_row_images):
    folder.mkdir(exist_ok=True)
    _parquet(
        folder / "shard0.parquet",
        [
            ("A cat", [_png(64, 48, 1)]),
            ("Make it <style>like <image_1>", second_row_images),
            ("Put <id>the man <image_1> on a beach <image_2>", [_png(60, 84, 2), b"garbage"]),
        ],
    )
    return folder


def _batch(pipe, data, out):
    return run_batch(pipe, iter_rows(parquet_files(str(data))), out, CONFIG)


def _failures(out) -> list[dict]:
    return [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]


def test_reruns_keep_one_failure_per_row_and_a_folder_wide_summary(tmp_path, tiny_pipe):
    data, out = tmp_path / "data", tmp_path / "out"
    _data(data, [_png(64, 64, 3), b"not an image", _png(64, 64, 4)])
    first = _batch(tiny_pipe, data, out)
    assert (first.generated, first.failed) == (1, 2)
    failures = _failures(out)
    assert [f["row_id"] for f in failures] == ["shard0-000001", "shard0-000002"]
    assert failures[0]["error"].startswith("image_list[1] cannot be decoded: not a readable image")
    assert "BytesIO" not in failures[0]["error"] and "b'not an i'" in failures[0]["error"]

    _data(data, [_png(64, 64, 3), b"still not an image", _png(64, 64, 4)])  # fails again, differently
    second = _batch(tiny_pipe, data, out)
    assert (second.generated, second.skipped_existing, second.failed) == (0, 1, 2)
    failures = _failures(out)
    assert [f["row_id"] for f in failures] == ["shard0-000001", "shard0-000002"]  # not repeated
    assert "b'still no'" in failures[0]["error"]  # the latest error
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["generated"], summary["failed"]) == (1, 2)
    assert summary["this_run"] == {**summary["this_run"], "rows": 3, "generated": 0, "skipped_existing": 1}

    _data(data, [_png(64, 64, 3), _png(64, 64, 5), _png(64, 64, 4)])  # the row is repaired
    third = _batch(tiny_pipe, data, out)
    assert (third.generated, third.skipped_existing, third.failed) == (1, 1, 1)
    assert [f["row_id"] for f in _failures(out)] == ["shard0-000002"]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["generated"], summary["failed"]) == (2, 1)
    assert [f["row_id"] for f in summary["failures"]] == ["shard0-000002"]
    assert summary["this_run"]["generated"] == 1 and summary["this_run"]["failed"] == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_missing_source_is_refused_before_anything_is_created(tmp_path):
    with pytest.raises(InputError, match="neither a parquet file"):
        parquet_files(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no .parquet files"):
        parquet_files(str(empty))


def test_a_source_that_fails_on_its_first_row_creates_no_folder(tmp_path, tiny_pipe):
    def rows():
        raise InputError("the source is gone")
        yield SigmaRow("r", "x", ())

    out = tmp_path / "out"
    with pytest.raises(InputError, match="the source is gone"):
        run_batch(tiny_pipe, rows(), out, CONFIG)
    assert not out.exists()


@pytest.mark.parametrize("under", [False, True], ids=["a-file", "under-a-file"])
def test_output_that_is_a_file_is_refused_and_nothing_is_created(tmp_path, tiny_pipe, under):
    data = _data(tmp_path / "data", [_png(64, 64, 3), _png(64, 64, 4)])
    blocker = tmp_path / "taken.png"
    blocker.write_bytes(b"x")
    out = blocker / "out" if under else blocker
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(InputError, match="taken.png is a file"):
        _batch(tiny_pipe, data, out)
    assert sorted(tmp_path.rglob("*")) == before and blocker.read_bytes() == b"x"


def test_check_output_dir(tmp_path, monkeypatch):
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # nothing is created
    monkeypatch.setattr("sigma_studio.model.files.writable", lambda folder: False)
    with pytest.raises(InputError, match=r"cannot be created: .* is not writable; pass a folder you can write to"):
        check_output_dir(tmp_path / "new")
    with pytest.raises(InputError, match="--out .* is not writable"):
        check_output_dir(tmp_path)


def test_batch_outputs_carry_the_record_and_replay_with_generate_from(tiny_pipe, tmp_path):
    """Every output's record is in its PNG and in records.jsonl (once, across reruns); the references are saved
    beside the outputs, so ``sigma generate --from`` reproduces an output bit for bit as it is."""
    from typer.testing import CliRunner

    from sigma_studio.cli.main import app
    from sigma_studio.model import read_record

    data = tmp_path / "data"
    data.mkdir()
    _parquet(
        data / "s.parquet", [("Make it <style>like <image_1> please <image_2>", [_png(40, 56, 3), _png(64, 48, 4)])]
    )
    out = tmp_path / "out"
    _batch(tiny_pipe, data, out)
    _batch(tiny_pipe, data, out)  # a rerun skips the row and must not repeat its record
    lines = (out / "records.jsonl").read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    png = out / entry["output"]
    record = read_record(png)
    assert record.source["instruction"].startswith("Make it") and record.prompt == "Make it <style>like <img1> please"
    assert entry["sequence"] == list(record.sequence) and record.images[0]["file"].endswith(".ref1.png")
    again = tmp_path / "again.png"
    result = CliRunner().invoke(app, ["generate", "--from", str(png), "--out", str(again)])
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(again)))


def test_a_folder_resumes_only_with_its_own_settings(tiny_pipe, tmp_path):
    data = _data(tmp_path / "data", [_png(40, 56, 3), _png(64, 48, 4)])
    out = tmp_path / "out"
    _batch(tiny_pipe, data, out)
    with pytest.raises(InputError, match=r"made with other settings \(steps differ\)"):
        run_batch(tiny_pipe, iter_rows(parquet_files(str(data))), out, CONFIG.replace(steps=3))
