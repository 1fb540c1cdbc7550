"""The ``sigma`` command line end to end with Typer's runner on the tiny model."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sigma_studio.cli.main import app
from sigma_studio.model import read_record
from sigma_studio.model.images import resize_size
from sigma_studio.model.presets import tiny

runner = CliRunner()
TINY = ["--model", "tiny", "--steps", "3"]


def run(*args: str, **kwargs):
    return runner.invoke(app, list(args), catch_exceptions=False, **kwargs)


@pytest.fixture
def photos(tmp_path):
    paths = []
    for k, (w, h) in enumerate([(70, 90), (80, 60)]):
        p = tmp_path / f"ref{k}.png"
        Image.fromarray(np.random.default_rng(k).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_help():
    result = run("--help")
    assert result.exit_code == 0 and "generate" in result.output and "batch" in result.output
    assert "--group-mask" in run("generate", "--help").output


def test_generate_named_and_positional(tmp_path, photos):
    out = tmp_path / "o.png"
    result = run(
        "generate", "Place <id>the man <img1> next to <subject>the dog <img2>", photos[1],
        "--image", f"img1={photos[0]}", "--out", str(out), "--seed", "5", "--group-mask", *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert str(out) in result.output and "seed 5" in result.output
    img = Image.open(out)
    assert img.size == (80, 64)  # img2 (positional) is the last reference: its VAE size
    record = read_record(out)
    assert record.reference_files()["img2"].endswith("ref1.png") and record.config["group_mask"] is True
    assert record.config["seed"] == 5 and record.config["size"] == [64, 80] and record.model == "tiny"


def test_json_and_from_reproduce_the_image(tmp_path, photos):
    first = tmp_path / "first.png"
    r = run("generate", "a <style>look <img1>", photos[0], "--out", str(first), "--json", *TINY)
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    assert data["output"] == str(first.resolve()) and data["model"] == "tiny"
    assert isinstance(data["config"]["seed"], int) and data["config"]["seed"] == read_record(first).config["seed"]
    assert data["sequence"] == [
        {"text": "a <style>look"},
        {"image": "img1", "role": "reference", "tokens": ["<style>"], "size": [64, 96]},  # the model size
    ]
    again = tmp_path / "again.png"
    r2 = run("generate", "--from", str(first), "--out", str(again), "--model", "tiny")
    assert r2.exit_code == 0, r2.output
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a <img1>", "missing.png"], "Image file not found"),
        (["a <styel> <img1>", "{p0}"], "Unknown token <styel>"),
        (["a <img2>", "--image", "img1={p0}"], "<img2> names an image that was not given"),
        (["a cat", "--size", "100x64"], "not a multiple of 16"),
        (["a cat", "--size", "2048x2048"], "over this model's limit"),
        (["a cat", "--renorm", "local"], "--renorm 'local' is not supported"),
        (["a <img1>", "{corrupt}"], "not a readable image"),
        (["a <img1>", "{bomb}"], "too large to decode safely"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, photos, args, message):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 8000)).save(bomb)
    args = [a.format(p0=photos[0], corrupt=corrupt, bomb=bomb) for a in args]
    out_dir = tmp_path / "out"
    result = run("generate", *args, "--out", str(out_dir / "o.png"), *TINY)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_bad_size_syntax_is_a_usage_error():
    result = run("generate", "a cat", "--size", "big", *TINY)
    assert result.exit_code == 2 and "WIDTHxHEIGHT" in result.output


def test_offline_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run("generate", "a cat", "--cache-dir", str(tmp_path), "--steps", "2")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "sigma download sigma" in lines[0] and "Traceback" not in result.output
    result = run("download", "bagel", "--cache-dir", str(tmp_path))
    assert result.exit_code == 2 and "ByteDance-Seed/BAGEL-7B-MoT" in result.output


def _parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "instruction_list": pa.array([[[r[0]]] for r in rows], type=pa.list_(pa.list_(pa.string()))),
            "image_list": pa.array([r[1] for r in rows], type=pa.list_(pa.binary())),
        }
    )
    pq.write_table(table, path)


def _png(w: int, h: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_batch_resumes_and_counts_a_corrupt_row(tmp_path):
    pytest.importorskip("pyarrow")
    data = tmp_path / "data"
    data.mkdir()
    _parquet(
        data / "shard0.parquet",
        [
            ("Put <id>the man <image_1> on a beach <image_2>", [_png(60, 84, 1), _png(72, 64, 2)]),
            ("Make it <style>like <image_1>", [_png(64, 64, 3), b"not an image", _png(64, 64, 4)]),
            ("A cat", [_png(64, 48, 5)]),
        ],
    )
    out = tmp_path / "out"
    first = run("batch", str(data), "--out", str(out), *TINY)
    assert first.exit_code == 4, first.output  # some rows failed (EXIT_SOME_FAILED)
    assert "2 generated" in first.output and "1 failed" in first.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generated"] == 2 and summary["failed"] == 1
    assert (
        summary["failures"][0]["row_id"] == "shard0-000001" and "cannot be decoded" in summary["failures"][0]["error"]
    )
    assert Image.open(out / "shard0-000000.png").size == resize_size(72, 64, tiny().vae_transform)  # the truth's
    assert (out / "shard0-000000.gt.png").exists()
    second = run("batch", str(data), "--out", str(out), *TINY)
    assert second.exit_code == 4 and "0 generated, 2 already done" in second.output


def test_info():
    result = run("info")
    assert result.exit_code == 0
    assert "torch" in result.output and "auto would choose" in result.output and "cpu" in result.output


def test_generate_with_layout_controls(tmp_path, photos):
    out = tmp_path / "c.png"
    result = run(
        "generate", "a <subject>dog <img1> on grass", photos[0], "--canny", photos[1], "--canny-blur", "3",
        "--box", "0,0,0.5,1:dog", "--size", "64x48", "--out", str(out), *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (64, 48)
    record = read_record(out)
    assert record.controls["canny"] == photos[1] and record.controls["boxes"] == ["0,0,0.5,1:dog"]
    assert [img["role"] for img in record.images] == ["reference", "canny", "boxes"]
    again = tmp_path / "again.png"
    assert run("generate", "--from", str(out), "--out", str(again), "--model", "tiny").exit_code == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))


def test_generate_with_subjects_and_background(tmp_path, photos):
    mask = tmp_path / "mask.png"
    m = np.zeros((64, 64), np.uint8)
    m[10:40, 10:40] = 255
    Image.fromarray(m).save(mask)
    bg = tmp_path / "bg.png"
    Image.new("RGB", (64, 64), (20, 120, 40)).save(bg)
    out = tmp_path / "s.png"
    result = run(
        "generate", "a sunny park", "--subject", f"{photos[0]}@box=0.5,0.5,1,1", "--subject", photos[1],
        "--mask", str(mask), "--background", str(bg), "--out", str(out), *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (64, 64)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--subject", "{p0}"], "has no placement"),
        (["--subject", "{p0}@box=0,0,2000,10"], "outside the"),
        (["--subject", "{p0}@cube=1"], "unknown placement"),
        (["--subject", "{p0}@box=0,0,0.5,0.5", "--box", "0,0,1,1"], "left over"),
    ],
)
def test_subject_errors(photos, args, message):
    result = run("generate", "a park", *[a.format(p0=photos[0]) for a in args], "--size", "64x64", *TINY)
    assert result.exit_code == 2 and message in result.output, result.output


def test_layout_command_saves_every_control_image(tmp_path, photos):
    out = tmp_path / "controls"
    result = run(
        "layout", "--out", str(out), "--model", "tiny", "--size", "64x64", "--canny", photos[0],
        "--subject", f"{photos[0]}@box=0,0,0.6,0.6", "--subject", f"{photos[1]}@box3d=0,0,3,1,1,1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        f"{n}.png" for n in ("canny", "identities", "spatial", "routing_ascending", "routing_descending", "structure")
    )
    asc = np.asarray(Image.open(out / "routing_ascending.png"))
    assert set(np.unique(asc)) <= {0, 10, 20} and (asc == 10).any() and (asc == 20).any()


def test_row_ids_stay_unique_across_folders(tmp_path):
    from sigma_studio.model.data.dataset import iter_rows, parquet_files

    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        _parquet(tmp_path / sub / "00000.parquet", [("A cat", [_png(64, 48, 1)])])
    ids = [r.row_id for r in iter_rows(parquet_files(str(tmp_path)))]
    assert ids == ["a__00000-000000", "b__00000-000000"]
