"""Per-token reference labels (``--label-weight``): what the shapes world's meta says each reference token shows,
where the trainer finds those tokens in a packed step, and a run with the training-only heads that resumes
exactly and exports the plain architecture."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sigma_studio.finetune.config import TrainConfig
from sigma_studio.finetune.data import DropConfig, build_sample
from sigma_studio.finetune.labels import FILE, label_targets
from sigma_studio.finetune.packing import pack
from sigma_studio.finetune.trainer import Trainer
from sigma_studio.model import InputError
from sigma_studio.model.data.dataset import iter_rows, write_parquet
from sigma_studio.model.shapes import tasks
from sigma_studio.model.shapes.labels import row_labels
from sigma_studio.model.shapes.world import COLOURS, SHAPES
from tests.test_finetune import train

pytest.importorskip("pyarrow")


def _token(box, grid: int = 8, canvas: int = 64) -> int:
    """The flat index of the token under a box's centre."""
    x, y, w, h = box
    step = canvas / grid
    return int((y + h / 2) // step) * grid + int((x + w / 2) // step)


@pytest.mark.parametrize("seed", range(6))
def test_select_labels_mark_each_object_and_the_named_one(seed):
    ex = tasks.select(random.Random(seed), "train", 64)
    labels = row_labels("select", json.dumps(ex.meta), {0: ((8, 8), 64)})[0]
    assert set(labels) == {"shape", "named"} and all(v.shape == (64,) for v in labels.values())
    named_at = _token(ex.meta["source"])
    assert labels["named"][named_at] == 1 and labels["shape"][named_at] == SHAPES.index(ex.meta["shape"]) + 1
    # every named token shows the named shape; the other objects' tokens are not named
    assert (labels["shape"][labels["named"] == 1] == SHAPES.index(ex.meta["shape"]) + 1).all()
    for shape, _colour, box in ex.meta["objects"]:
        if box != ex.meta["source"]:
            at = _token(box)
            assert labels["named"][at] == 0 and labels["shape"][at] in (0, SHAPES.index(shape) + 1)
    # the background: tokens no object touches
    pixels = np.asarray(ex.images[0]).astype(int)
    cells = pixels.reshape(8, 8, 8, 8, 3).transpose(0, 2, 1, 3, 4).reshape(64, -1)
    bare = [k for k in range(64) if (np.abs(cells[k] - 200) < 8).all()]
    assert bare and (labels["shape"][bare] == 0).all() and (labels["named"][bare] == 0).all()


def test_labels_follow_the_token_grid_and_skip_rows_without_them():
    ex = tasks.select(random.Random(0), "train", 64)
    coarse = row_labels("select", json.dumps(ex.meta), {0: ((4, 4), 64)})[0]
    assert coarse["shape"].shape == (16,) and coarse["named"][_token(ex.meta["source"], 4)] == 1
    bg = tasks.background(random.Random(0), "train", 64)
    only_shape = row_labels("background", json.dumps(bg.meta), {0: ((8, 8), 64)})[0]
    assert set(only_shape) == {"shape"} and only_shape["shape"][_token(bg.meta["box"])] > 0
    assert row_labels("compose", json.dumps({"shape": "star"}), {0: ((8, 8), 64)}) == {}
    assert row_labels("select", "", {0: ((8, 8), 64)}) == {}


def test_the_meta_column_is_read_with_each_row(tmp_path):
    rows = [tasks.select(random.Random(k), "train", 64) for k in range(3)]
    write_parquet(tmp_path / "select.parquet", iter(rows))
    read = list(iter_rows([tmp_path / "select.parquet"]))
    assert [json.loads(r.meta) for r in read] == [r.meta for r in rows]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labels")
    rows = [tasks.select(random.Random(k), "train", 64) for k in range(6)]
    rows += [tasks.background(random.Random(k), "train", 64) for k in range(2)]
    rows += [tasks.text(random.Random(k), "train", 64) for k in range(2)]
    write_parquet(folder / "data" / "select.parquet", iter(rows[:6]))
    write_parquet(folder / "data" / "rest.parquet", iter(rows[6:]))
    return folder


def test_label_targets_are_the_reference_tokens_of_the_packed_step(world, tiny_pipe):
    arch = tiny_pipe.arch.replace(vit=None)
    g = torch.Generator().manual_seed(0)
    samples = [
        build_sample(row, arch, tiny_pipe.tokenizer, g, DropConfig(0, 0, 0), labels=("shape", "named"))
        for row in list(iter_rows([world / "data" / "select.parquet"]))[:3]
    ]
    batch = pack(samples, arch, tiny_pipe.tokenizer.ids)
    targets = label_targets(samples)
    h, w = samples[0].plan.blocks[[b.kind for b in samples[0].plan.blocks].index("vae")].grid
    for name in ("shape", "named"):
        idx, classes = targets[name]
        assert len(idx) == len(classes) == 3 * h * w
        vae = set(batch.packed_vae_token_indexes.tolist())
        target_tokens = set(batch.mse_loss_indexes.tolist())
        assert set(idx.tolist()) <= vae - target_tokens  # reference tokens, never the noised target's
    assert (targets["named"][1] == 1).any()
    # without label sets (every run without --label-weight) a sample carries none
    bare = build_sample(list(iter_rows([world / "data" / "select.parquet"]))[0], arch, tiny_pipe.tokenizer, g)
    assert bare.labels == {} and label_targets([bare]) == {}


def test_drawn_labels_give_every_token_being_drawn_the_target_shape():
    grid = {k: ((8, 8), 64) for k in range(3)}  # two references and the target, the last
    lay = tasks.layout(random.Random(3), "train", 64)
    drawn = row_labels("layout", json.dumps(lay.meta), grid, ("drawn",))
    assert list(drawn) == [2] and list(drawn[2]) == ["drawn"]
    assert (drawn[2]["drawn"] == SHAPES.index(lay.meta["shape"])).all() and drawn[2]["drawn"].shape == (64,)
    assert row_labels("layout", json.dumps(lay.meta), grid) == {}  # the default sets label references only
    sel = tasks.select(random.Random(1), "train", 64)
    both = row_labels("select", json.dumps(sel.meta), {0: ((8, 8), 64), 1: ((4, 4), 64)}, ("named", "drawn"))
    assert set(both[0]) == {"named"} and (both[1]["drawn"] == SHAPES.index(sel.meta["shape"])).all()
    assert both[1]["drawn"].shape == (16,)  # at the target's own token grid
    assert row_labels("sigmagen", json.dumps({"subjects": []}), grid, ("drawn",)) == {}  # no one-object target


def test_drawn_colour_labels_the_same_tokens_with_the_target_colour():
    sel = tasks.select(random.Random(1), "train", 64)
    grid = {0: ((8, 8), 64), 1: ((4, 4), 64)}
    both = row_labels("select", json.dumps(sel.meta), grid, ("drawn", "drawn-colour"))
    assert list(both) == [1] and set(both[1]) == {"drawn", "drawn-colour"}  # the target's tokens only
    assert (both[1]["drawn-colour"] == list(COLOURS).index(sel.meta["colour"])).all()
    assert both[1]["drawn-colour"].shape == both[1]["drawn"].shape == (16,)
    named = next(c for _, c, box in sel.meta["objects"] if list(box) == list(sel.meta["source"]))
    assert sel.meta["colour"] == named  # the named object's colour: what select fails to draw
    colour_only = row_labels("text", json.dumps(tasks.text(random.Random(2), "train", 64).meta), {0: ((4, 4), 64)},
                             ("drawn-colour",))  # fmt: skip
    assert list(colour_only[0]) == ["drawn-colour"]
    with pytest.raises(InputError, match="meta"):  # a one-object meta without its colour is a bad row, skipped
        row_labels("text", json.dumps({"shape": "star"}), {0: ((4, 4), 64)}, ("drawn-colour",))


def test_scene_labels_give_each_sigmagen_target_token_the_subject_covering_it():
    layers = [  # a red square in the top left quarter, a blue circle over the bottom right one
        {"shape": "square", "colour": "red", "box": [0, 0, 32, 32]},
        {"shape": "circle", "colour": "blue", "box": [32, 32, 32, 32]},
    ]
    meta = json.dumps({"layers": layers, "dropped": None})
    grid = {0: ((8, 8), 64), 1: ((8, 8), 64)}  # the identity sheet, then the target
    got = row_labels("sigmagen", meta, grid, ("scene", "scene-colour", "drawn"))
    assert list(got) == [1] and set(got[1]) == {"scene", "scene-colour"}  # no one-object target: no drawn label
    shape, colour = got[1]["scene"].reshape(8, 8), got[1]["scene-colour"].reshape(8, 8)
    assert (shape[:4, :4] == SHAPES.index("square") + 1).all() and (
        colour[:4, :4] == list(COLOURS).index("red") + 1
    ).all()
    assert shape[6, 6] == SHAPES.index("circle") + 1 and colour[6, 6] == list(COLOURS).index("blue") + 1
    assert (shape[:4, 4:] == 0).all() and (colour[4:, :4] == 0).all()
    # a row that dropped a control channel may have dropped the places: not labelled
    assert row_labels("sigmagen", json.dumps({"layers": layers, "dropped": "layout"}), grid, ("scene",)) == {}
    with pytest.raises(InputError, match="KeyError"):
        row_labels("sigmagen", json.dumps({"layers": [{"shape": "star"}]}), grid, ("scene",))


def test_drawn_label_targets_are_the_noised_target_tokens(world, tiny_pipe):
    arch = tiny_pipe.arch.replace(vit=None)
    g = torch.Generator().manual_seed(0)
    rows = list(iter_rows([world / "data" / "rest.parquet"]))  # background and text rows
    sets = ("drawn", "drawn-colour")
    samples = [build_sample(row, arch, tiny_pipe.tokenizer, g, DropConfig(0, 0, 0), labels=sets) for row in rows]
    batch = pack(samples, arch, tiny_pipe.tokenizer.ids)
    targets = label_targets(samples)
    idx, classes = targets["drawn"]
    assert sorted(idx.tolist()) == sorted(batch.mse_loss_indexes.tolist())  # exactly the tokens being drawn
    meta = [json.loads(row.meta) for row in rows]
    per_row = len(idx) // len(rows)
    assert classes.tolist() == [SHAPES.index(m["shape"]) for m in meta for _ in range(per_row)]
    assert torch.equal(targets["drawn-colour"][0], idx)  # the same tokens, each with the target's colour
    colours = [list(COLOURS).index(m["colour"]) for m in meta for _ in range(per_row)]
    assert targets["drawn-colour"][1].tolist() == colours
    # a row whose words or references were dropped (classifier-free guidance) may not say what to draw: no label
    dropped = build_sample(rows[0], arch, tiny_pipe.tokenizer, g, DropConfig(1.0, 1.0, 1.0), labels=sets)
    assert dropped.labels == {}


def _config(world, out: str, **kw) -> TrainConfig:
    base = dict(
        out=str(world / out), dataset=str(world / "data"), model="tiny", steps=4, max_tokens=600, lr=1e-3,
        warmup=1, held_out=0.0, save_every=2, ema=0.9, tensorboard=False, label_weight=1.0,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_a_labelled_run_resumes_exactly_and_exports_the_plain_model(world):
    straight, straight_losses = train(_config(world, "straight"))
    _, first = train(_config(world, "killed"), stop_at=3)
    resumed, rest = train(_config(world, "killed", resume=True))
    assert first == straight_losses[:3] and rest == straight_losses[2:]  # resumed from step 2, exactly
    a = straight.run_dir / (straight.run_dir / "latest").read_text()
    b = resumed.run_dir / (resumed.run_dir / "latest").read_text()
    heads_a, heads_b = load_file(str(a / FILE)), load_file(str(b / FILE))
    assert heads_a.keys() == heads_b.keys() and all(torch.equal(heads_a[k], heads_b[k]) for k in heads_a)
    plain, _ = train(_config(world, "plain", label_weight=0.0))
    c = plain.run_dir / (plain.run_dir / "latest").read_text()
    assert load_file(str(a / "ema.safetensors")).keys() == load_file(str(c / "ema.safetensors")).keys()
    assert not (c / FILE).exists()
    with pytest.raises(InputError, match="trained without --label-weight"):
        Trainer(_config(world, "plain", steps=6, resume=True)).run()


def test_a_label_layer_the_model_lacks_is_refused(world):
    with pytest.raises(InputError, match="--label-layer 99 is not a layer of this model"):
        Trainer(_config(world, "deep", label_layer=99)).run()


def test_bad_label_options_are_refused_before_anything_loads(world):
    with pytest.raises(InputError, match="--label-weight"):
        _config(world, "bad", label_weight=-1.0)
    with pytest.raises(InputError, match="--label-layer must be a whole number of at least 0"):
        _config(world, "bad", label_layer=-1)
    for sets in ((), ("colour",), ("drawn", "drawn")):
        with pytest.raises(
            InputError, match="--label-sets .*give one or more of shape, named, drawn, drawn-colour, scene"
        ):
            _config(world, "bad", label_sets=sets)
    assert _config(world, "ok", label_sets=["drawn", "shape"]).label_sets == ("drawn", "shape")


def test_a_run_resumed_with_other_label_sets_is_refused(world):
    train(_config(world, "drawn", label_sets=("drawn", "drawn-colour"), steps=2, save_every=2))
    with pytest.raises(InputError, match="sets drawn, drawn-colour: resume it with --label-sets drawn,drawn-colour"):
        Trainer(_config(world, "drawn", steps=4, resume=True)).run()
    resumed, _ = train(_config(world, "drawn", label_sets=("drawn-colour", "drawn"), steps=3, resume=True))
    assert resumed.step == 3  # the same sets in another order resume


def test_a_meta_that_does_not_say_what_the_references_show_is_a_bad_row(tmp_path):
    with pytest.raises(InputError, match="its meta does not say what its references show"):
        row_labels("select", "{not json", {0: ((8, 8), 64)})
    with pytest.raises(InputError, match="KeyError"):
        row_labels("select", json.dumps({"shape": "star"}), {0: ((8, 8), 64)})
    rows = [tasks.select(random.Random(k), "train", 64) for k in range(4)]
    rows[1].meta = {"shape": rows[1].meta["shape"]}  # says nothing of the reference's objects
    write_parquet(tmp_path / "data" / "select.parquet", iter(rows))
    trainer, _ = train(_config(tmp_path, "run", steps=2, save_every=0))
    assert trainer.stats.bad >= 1 and any("meta" in reason for reason in trainer.stats.reasons)


def test_sigmagen_rows_label_their_target_tokens_in_a_training_sample(tmp_path):
    from sigma_studio.finetune.shapes_stages import sigmagen_rows
    from sigma_studio.model import load_pipeline

    sigmagen_rows(tmp_path / "rows", 6, 0)
    pipe = load_pipeline("shapes")
    arch, g = pipe.arch, torch.Generator().manual_seed(0)
    rows = list(iter_rows(sorted((tmp_path / "rows").rglob("*.parquet"))))
    sets = ("scene", "scene-colour")
    for row in rows:
        sample = build_sample(row, arch, pipe.tokenizer, g, DropConfig(0, 0, 0), labels=sets)
        meta = json.loads(row.meta)
        if meta.get("dropped"):
            assert sample.labels == {}
            continue
        (target,) = sample.labels  # the target picture only: the last
        assert target == max(b.image for b in sample.plan.blocks if b.kind == "noise")
        scene = sample.labels[target]["scene"]
        drawn = {SHAPES.index(t["shape"]) + 1 for t in meta["layers"]}
        assert set(scene.unique().tolist()) - {0} <= drawn and (scene > 0).any()
        idx, classes = label_targets([sample])["scene-colour"]
        batch = pack([sample], arch, pipe.tokenizer.ids)
        assert sorted(idx.tolist()) == sorted(batch.mse_loss_indexes.tolist()) and classes.max() <= 8
