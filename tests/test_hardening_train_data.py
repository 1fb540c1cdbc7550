"""Hardening (issue 20) of finetune, ``sigma sigmagen`` and ``sigma shapes``: each hostile input is refused with one
clear line (or skipped and counted), before anything is written, and a diverging run keeps its last good checkpoint."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sigma_studio.cli.main import main
from sigma_studio.finetune import config as finetune_config
from sigma_studio.finetune.config import TrainConfig
from sigma_studio.finetune.monitor import TrainingDiverged, check_state
from sigma_studio.finetune.trainer import Trainer
from sigma_studio.model import InputError
from sigma_studio.model.weights.loader import save_pipeline

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def sigma(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_.value.code, " ".join((out + err).split())  # the console wraps long lines: compare words


def refused(capsys, *args) -> str:
    """Run a command that must be refused: exit 2, one ``error:`` line, never a traceback."""
    code, text = sigma(capsys, *args)
    assert code == 2, text
    assert "Traceback" not in text and text.count("error:") == 1, text
    return text


def png(w: int, h: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def write_rows(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "instruction_list": pa.array([[[r[0]]] for r in rows], type=pa.list_(pa.list_(pa.string()))),
        "image_list": pa.array([r[1] for r in rows], type=pa.list_(pa.binary())),
    })  # fmt: skip
    pq.write_table(table, path)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_pipe):
    root = tmp_path_factory.mktemp("harden")
    save_pipeline(tiny_pipe, root / "tiny")
    write_rows(
        root / "data" / "edit-00000.parquet", [("Make it <style>like <image_1>", [png(64, 64, 4), png(64, 48, 5)])]
    )
    write_rows(root / "bad" / "edit-00000.parquet", [("broken row", [b"not an image", png(64, 64, 6)])])
    return root


def config(ws, out: str, **kw) -> TrainConfig:
    base = dict(out=str(ws / out), dataset=str(ws / "data"), model=str(ws / "tiny"), steps=4, max_tokens=300,
                lr=1e-3, warmup=0, held_out=0.0, save_every=1, ema=0.9, tensorboard=False)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def assert_finite_checkpoint(run, step: int) -> None:
    latest = run / (run / "latest").read_text()
    assert latest.name == f"step-{step:06d}"
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(str(latest / name)).values()), name
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [f"step-{k:06d}" for k in range(1, step + 1)]


# -- 1. finetune: a non-finite step stops the run ----------------------------------------------------------------
def test_finetune_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(ws, monkeypatch):
    """--lr 1e10 (let past the bound here) makes the gradients NaN at step 2: the run stops there with the step
    and the hint, and step 1's checkpoint stays the latest, every tensor finite; nothing of step 2 is saved."""
    monkeypatch.setattr(finetune_config, "MAX_LR", 1e12)
    cfg = config(ws, "diverge", lr=1e10, min_lr=0.0)
    with pytest.raises(TrainingDiverged, match=r"step 2: .* Lower --lr \(now 1e\+10\)"):
        Trainer(cfg).run()
    assert_finite_checkpoint(ws / "diverge", 1)


def test_finetune_non_finite_weights_after_a_step_stop_before_the_checkpoint(ws, monkeypatch):
    """An optimizer step that leaves a NaN weight (simulated at step 3) is caught before its checkpoint."""
    trainer = Trainer(config(ws, "nanweight"))
    step = torch.optim.AdamW.step

    def poisoned(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        if trainer.step == 2:  # the third step
            with torch.no_grad():
                next(iter(trainer.params.values())).view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoned)
    with pytest.raises(TrainingDiverged, match="step 3: a weight holds NaN or inf"):
        trainer.run()
    assert_finite_checkpoint(ws / "nanweight", 2)
    with pytest.raises(TrainingDiverged, match="w in ema.safetensors holds NaN"):  # the save's own last check
        check_state({"ema.safetensors": {"w": torch.tensor([1.0, float("nan")])}}, 5, 1e-3)


def test_finetune_lr_is_bounded(ws, capsys):
    text = refused(capsys, "finetune", "--model", ws / "tiny", "--dataset", ws / "data", "--lr", "1e10",
                   "--out", ws / "lr-run")  # fmt: skip
    assert "--lr 1e+10 is above 0.1" in text and not (ws / "lr-run").exists()


# -- 2. finetune: nothing on disk before the inputs are accepted --------------------------------------------------
class FakeSummaryWriter:
    """Stands in for TensorBoard's writer (not installed everywhere), which creates its folder when it is built."""

    scalars: list = []

    def __init__(self, log_dir: str):
        Path(log_dir).mkdir(parents=True)

    def add_scalar(self, key, value, step):
        self.scalars.append((key, step))

    def close(self):
        """Nothing to flush: the stand-in only keeps what it was given."""


def test_refused_finetune_leaves_nothing_on_disk(ws, capsys, monkeypatch):
    """A dataset without one usable row is refused at the first step: no run folder, no tensorboard/. A run whose
    inputs are accepted writes its metrics there."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeSummaryWriter))
    with pytest.raises(InputError, match="no usable training sample"):
        Trainer(config(ws, "refused", dataset=str(ws / "bad"), tensorboard=True)).run()
    assert not (ws / "refused").exists()
    refused(capsys, "finetune", "--model", ws / "tiny", "--dataset", ws / "bad", "--steps", "2", "--out", ws / "r2")
    assert not (ws / "r2").exists()
    Trainer(config(ws, "accepted", steps=1, tensorboard=True, log_every=1)).run()
    assert (ws / "accepted" / "tensorboard").is_dir() and ("train/loss", 1) in FakeSummaryWriter.scalars


# -- 3. finetune: an unknown --family-weight ----------------------------------------------------------------------
def test_unknown_family_weight_is_refused_with_the_known_families(ws, capsys):
    text = refused(capsys, "finetune", "--model", ws / "tiny", "--dataset", ws / "data", "--family-weight",
                   "nosuch=2", "--out", ws / "fw")  # fmt: skip
    assert "--family-weight nosuch" in text and "its families are edit" in text and not (ws / "fw").exists()
    with pytest.raises(InputError, match="its families are edit"):  # the trainer checks too (torchrun, recipes)
        Trainer(config(ws, "fw2", family_weights={"edit": 2.0, "nosuch": 1.0})).setup()
    assert not (ws / "fw2").exists()


# -- 4. sigmagen make: a routing step that cannot fit the subjects -----------------------------------------------
def test_a_routing_step_that_cannot_fit_the_subjects_is_refused(capsys, tmp_path):
    text = refused(
        capsys, "sigmagen", "make", "--shapes", "2", "--routing-step", "100", "--out", tmp_path / "x.parquet"
    )
    assert (
        "--routing-step 100 cannot tell 10 subjects apart" in text
        and "largest step that fits 10 subjects is 25" in text
    )
    assert not (tmp_path / "x.parquet").exists()
    text = refused(capsys, "sigmagen", "train", "--routing-step", "60", "--out", tmp_path / "sg")
    assert "largest step that fits 5 subjects is 51" in text and not (tmp_path / "sg").exists()
    out = tmp_path / "ok.parquet"  # a step that fits: every subject of every scene is kept
    code, text = sigma(capsys, "sigmagen", "make", "--shapes", "3", "--routing-step", "51", "--max-subjects", "5",
                       "--tile", "16", "--out", out)  # fmt: skip
    assert code == 0, text
    for meta in pq.read_table(out, columns=["meta"]).column("meta").to_pylist():
        meta = json.loads(meta)
        assert len(meta["subjects"]) == len(meta["things"]) >= 2


# -- 5. sigmagen make --coco: malformed annotations are skipped and counted; a non-COCO file is one line -------------
SQUARE = [[4, 4, 30, 4, 30, 30, 4, 30]]
BAD_ANNOTATIONS = {
    "a polygon has an odd number of coordinates": {"segmentation": [[4, 4, 30, 4, 30]]},
    "a polygon is not a list of numbers": {"segmentation": [["4", "4", "30", "4", "30", "30"]]},
    "no segmentation (polygons or RLE)": {"segmentation": "4 4 30 4 30 30"},
    "empty polygon list": {"segmentation": []},
    "a polygon has a NaN or infinite coordinate": {"segmentation": [[4, 4, float("nan"), 4, 30, 30]]},
    "a polygon has fewer than 3 points": {"segmentation": [[4, 4, 30, 30]]},
    "RLE counts are not whole numbers >= 0": {"segmentation": {"counts": [480.5, 240.5, 2351.0], "size": [48, 64]}},
    "RLE size is not the picture's [height, width]": {"segmentation": {"counts": [480, 240, 2352], "size": [64, 48]}},
    "RLE counts do not add up to the picture's pixels": {"segmentation": {"counts": [480, 240], "size": [48, 64]}},
    "RLE size is not [height, width]": {"segmentation": {"counts": [480, 240, 2352]}},
    "the segmentation covers no pixel of the picture": {"segmentation": [[500, 500, 600, 500, 600, 600]]},
    "an annotation whose image_id names no image": {"image_id": 77, "segmentation": SQUARE},
}


def test_malformed_coco_annotations_are_skipped_and_counted(capsys, tmp_path):
    from collections import Counter

    from sigma_studio.model.data.sigmagen import coco_scenes

    (tmp_path / "pictures").mkdir()
    Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(tmp_path / "pictures" / "p.png")
    annotations = [{"image_id": 0, "category_id": 1, "segmentation": SQUARE}]
    annotations += [{"image_id": 0, "category_id": 1, **bad} for bad in BAD_ANNOTATIONS.values()]
    annotations += [{"category_id": 1, "segmentation": SQUARE}, "not an annotation"]  # no image_id at all
    data = {"images": [{"id": 0, "file_name": "p.png"}, {"id": 1}], "categories": [{"id": 1, "name": "box"}, 7],
            "annotations": annotations}  # fmt: skip
    (tmp_path / "c.json").write_text(json.dumps(data))  # NaN is written as the literal NaN, as Python's json reads
    skipped = Counter()
    scenes = list(coco_scenes(tmp_path / "c.json", tmp_path / "pictures", skipped=skipped))
    assert [len(s.instances) for s in scenes if not isinstance(s, tuple)] == [1]  # only the good square
    assert scenes[0].instances[0].mask.sum() == 27 * 27  # the square, edges included, and nothing else
    assert scenes[1] == ("1", "an image entry without id and file_name")
    assert set(BAD_ANNOTATIONS) <= set(skipped) and skipped["an annotation whose image_id names no image"] == 3
    out = tmp_path / "rows.parquet"
    code, text = sigma(capsys, "sigmagen", "make", "--coco", tmp_path / "c.json", "--images", tmp_path / "pictures",
                       "--tile", "16", "--out", out)  # fmt: skip
    assert code == 0 and "Traceback" not in text, text
    assert "1 rows" in text and "1 scenes skipped" in text and f"skipped {len(BAD_ANNOTATIONS) + 3} annotations" in text


@pytest.mark.parametrize(
    "content, message",
    [
        (b"[1, 2, 3]", "is not a COCO instance file"),
        (b'{"info": {}}', "is not a COCO instance file"),
        (b'{"images": "p.png"}', "is not a COCO instance file"),
        (b'{"images": [], "annotations": {"a": 1}}', "'annotations' is not a list"),
        (b"\x89PNG\r\n\x1a\n\x00\xff", "is not a readable JSON file"),
        (b'{"images": [', "is not a readable JSON file"),
        (None, "is not a readable JSON file"),  # a folder
    ],
)
def test_a_file_that_is_not_coco_is_one_line(capsys, tmp_path, content, message):
    coco = tmp_path / "c.json"
    coco.mkdir() if content is None else coco.write_bytes(content)
    (tmp_path / "pictures").mkdir()
    text = refused(capsys, "sigmagen", "make", "--coco", coco, "--images", tmp_path / "pictures", "--out",
                   tmp_path / "rows.parquet")  # fmt: skip
    assert message in text and not (tmp_path / "rows.parquet").exists()


# -- 6. sigmagen make --tile ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("tile", ["0", "-3", "100000"])
def test_tile_out_of_range_is_refused_before_any_work(capsys, tmp_path, tile):
    text = refused(capsys, "sigmagen", "make", "--shapes", "2", "--tile", tile, "--out", tmp_path / "x.parquet")
    assert "--tile must be 8..1024 pixels" in text and not (tmp_path / "x.parquet").exists()


# -- 7. sigmagen eval --data <garbage> --------------------------------------------------------------------------------
def test_sigmagen_eval_on_garbage_data_is_one_line(capsys, tmp_path):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "2.parquet").write_bytes(b"PAR1 this is no parquet file")
    text = refused(capsys, "sigmagen", "eval", "--model", "shapes", "--data", garbage)
    assert "2.parquet is not a SIGMA-GEN eval file" in text
    foreign = tmp_path / "foreign"  # SIGMA rows without the eval's meta column
    write_rows(foreign / "3.parquet", [("Make it <style>like <image_1>", [png(8, 8, 1), png(8, 8, 2)])])
    assert "3.parquet is not a SIGMA-GEN eval file" in refused(capsys, "sigmagen", "eval", "--model", "shapes",
                                                               "--data", foreign)  # fmt: skip
    no_layers = tmp_path / "no-layers"
    no_layers.mkdir()
    pq.write_table(pa.table({"instruction_list": [[["x"]]], "image_list": [[png(8, 8, 1)]], "meta": ['{"a": 1}']}),
                   no_layers / "2.parquet")  # fmt: skip
    assert "none of its 1 rows is a usable scene" in refused(capsys, "sigmagen", "eval", "--model", "shapes",
                                                             "--data", no_layers)  # fmt: skip
    assert "holds no N.parquet files" in refused(capsys, "sigmagen", "eval", "--model", "shapes", "--data",
                                                 garbage / "2.parquet")  # fmt: skip


# -- 8. shapes make --out: a file in the way, a read-only folder -----------------------------------------------------
def test_shapes_make_into_a_file_or_a_read_only_folder_is_one_line(capsys, tmp_path, monkeypatch):
    from sigma_studio.model import files

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "is a file, not a folder" in refused(capsys, "shapes", "make", "--out", blocker, "--rows", "10")
    assert "is a file" in refused(capsys, "shapes", "make", "--out", blocker / "world", "--rows", "10")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    if files.writable(read_only):  # root writes through the permission bits: simulate the read-only folder
        monkeypatch.setattr(files, "writable", lambda folder: False)
    text = refused(capsys, "shapes", "make", "--out", read_only / "world", "--rows", "10")
    assert "not writable" in text and not (read_only / "world").exists()
    monkeypatch.undo()
    read_only.chmod(0o755)

    def full_disk(path, rows, row_group=1000):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("sigma_studio.model.shapes.tasks.write_parquet", full_disk)  # fails while writing
    assert "No space left on device" in refused(capsys, "shapes", "make", "--out", tmp_path / "w", "--rows", "10")


# -- 9. shapes eval --json <a folder> ---------------------------------------------------------------------------------
def test_shapes_eval_json_into_a_folder_is_one_line_before_the_model_loads(capsys, tmp_path):
    text = refused(capsys, "shapes", "eval", "--model", "no-such-model", "--json", tmp_path)
    assert f"--json {tmp_path} is a folder" in text  # refused before --model is even looked at
    (tmp_path / "f").write_text("x")
    assert "is a file, so nothing can be written" in refused(
        capsys, "shapes", "eval", "--json", tmp_path / "f" / "e.json"
    )
    assert "is a folder" in refused(
        capsys, "sigmagen", "eval", "--model", "shapes", "--data", tmp_path, "--json", tmp_path
    )


# -- 10. shapes train: arguments checked before any data is written ---------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "0"], "--steps must be a whole number of at least 1"),
        (["--ae-steps", "0"], "--ae-steps must be a whole number of at least 1"),
        (["--rows", "5"], "--rows must be a whole number of at least 10"),
        (["--seed", "-1"], "--seed must be a whole number of at least 0"),
    ],
)
def test_shapes_train_refuses_bad_arguments_before_writing_data(capsys, tmp_path, args, message):
    assert message in refused(capsys, "shapes", "train", "--out", tmp_path / "run", *args)
    assert not (tmp_path / "run").exists()
