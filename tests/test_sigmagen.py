"""SIGMA-GEN training rows: a small COCO-style set written here, converted by ``sigma sigmagen make``, and trained
on by ``sigma finetune``; the shapes world's scenes too; bad scenes skipped and counted."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from sigma_studio.cli.main import main
from sigma_studio.model.data.dataset import iter_rows, parquet_files
from sigma_studio.model.data.sigmagen import Instance, Scene, SigmaGenOptions, scene_row
from sigma_studio.model.shapes.scenes import shapes_scenes


def sigma(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_.value.code, out + err


@pytest.fixture
def coco(tmp_path):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(pictures / f"p{k}.png")
    square = [[4, 4, 30, 4, 30, 30, 4, 30]]
    triangle = [[40, 10, 60, 40, 36, 40]]
    rle = {"counts": [48 * 10, 48 * 5, 48 * 49], "size": [48, 64]}  # uncompressed RLE: columns 10..14
    data = {
        "images": [{"id": k, "file_name": f"p{k}.png", "width": 64, "height": 48} for k in range(3)]
        + [{"id": 9, "file_name": "missing.png", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "tent"}, {"id": 3, "name": "pole"}],
        "annotations": [
            {"image_id": 0, "category_id": 1, "segmentation": square},
            {
                "image_id": 0,
                "category_id": 2,
                "segmentation": triangle,
                "bbox3d": {"center": [0.5, 0.0, 3.0], "size": [0.8, 0.8, 0.5], "yaw": 0.3},
            },
            {"image_id": 1, "category_id": 3, "segmentation": rle},
            {"image_id": 2, "category_id": 1, "segmentation": [[1, 1, 2, 1, 2, 2]]},  # too small: the scene is skipped
        ],
        "captions": [{"image_id": 0, "caption": "a box and a tent on a field"}],
    }
    (tmp_path / "instances.json").write_text(json.dumps(data))
    return tmp_path


def test_coco_rows_train_with_finetune(capsys, coco, tmp_path):
    out = tmp_path / "data" / "train.parquet"
    code, text = sigma(capsys, "sigmagen", "make", "--coco", coco / "instances.json", "--images", coco / "pictures",
                       "--out", out, "--tile", "32")  # fmt: skip
    assert code == 0, text
    assert "2 rows" in text and "2 scenes skipped" in text  # the missing picture, and the one without a subject
    rows = list(iter_rows(parquet_files(str(out.parent))))
    assert len(rows) == 2
    first = rows[0]
    sheet, spatial, target = first.decode_images()
    assert sheet.size == (32, 64) and spatial.size == target.size == (64, 48)
    assert first.instruction.startswith("<subject>these subjects <image_1> <layout>arranged like <image_2>")
    assert first.instruction.endswith(("to compose: a box and a tent on a field", "Place these subjects in a scene"))
    routing = np.asarray(spatial)[..., 0]
    assert {10, 20} <= set(np.unique(routing)) or 0 in np.asarray(spatial).max(axis=(0, 1))  # (a dropped channel)
    train = ["finetune", "--dataset", out.parent, "--model", "tiny", "--steps", "1", "--max-tokens", "3000"]
    code, text = sigma(capsys, *train, "--out", tmp_path / "run")
    assert code == 0, text


def test_shapes_scenes_and_their_options(tmp_path):
    scenes = list(shapes_scenes(5, seed=3))
    assert all(2 <= len(s.instances) <= 5 for s in scenes)
    options = SigmaGenOptions(tile=16, channel_drop=0.0, compose_share=1.0, precision=("mask_depth",))
    row = scene_row(scenes[0], options, random.Random(0))
    assert "to compose: a grey picture of" in row.instruction and row.meta["form"] == "compose"
    spatial = np.asarray(row.images[1])
    assert spatial[..., 0].max() >= 10 and spatial[..., 2].max() > 0  # routing and depth present
    whole = scene_row(scenes[0], SigmaGenOptions(tile=16, channel_drop=0.0, full_depth=1.0), random.Random(0))
    assert np.array_equal(np.asarray(whole.images[1])[..., 2], scenes[0].depth)  # the whole scene's depth
    options = SigmaGenOptions(tile=16, channel_drop=1.0, precision=("mask_depth",))  # every channel holds something
    dropped = scene_row(scenes[0], options, random.Random(0))
    zero = [
        ("ascending", "descending", "structure")[c] for c in range(3) if not np.asarray(dropped.images[1])[..., c].any()
    ]
    assert zero == [dropped.meta["dropped"]]  # exactly one channel, the one named
    many = next(s for s in shapes_scenes(20, seed=1, subjects=(5, 5)) if len(s.instances) == 5)
    row = scene_row(many, SigmaGenOptions(tile=16, channel_drop=0.0, routing_step=51, max_subjects=5), random.Random(0))
    assert row.meta["routing_step"] == 51 and len(row.meta["subjects"]) == 5  # 51..255: all five fit in 255
    assert set(np.unique(np.asarray(row.images[1])[..., 0])) <= {0, 51, 102, 153, 204, 255}


def test_bad_options_and_inputs_are_one_line(capsys, tmp_path):
    code, text = sigma(
        capsys, "sigmagen", "make", "--shapes", "2", "--precision", "cube", "--out", tmp_path / "x.parquet"
    )
    assert code == 2 and "--precision cube" in text and not (tmp_path / "x.parquet").exists()
    code, text = sigma(capsys, "sigmagen", "make", "--out", tmp_path / "x.parquet")
    assert code == 2 and "--coco FILE --images DIR, or --shapes N" in text
    with pytest.raises(Exception, match="no instance covers"):
        scene_row(Scene("s", Image.new("RGB", (8, 8)), [Instance("dot", np.zeros((8, 8), bool))]),
                  SigmaGenOptions(), random.Random(0))  # fmt: skip


def test_three_d_boxes_from_coco_and_the_shapes_world(coco):
    """A COCO annotation's bbox3d and every shapes-world thing can be placed by its 3-D box: a routing region
    where the box projects, with per-pixel depth."""
    from sigma_studio.model.data.sigmagen import coco_scenes

    scene = next(s for s in coco_scenes(coco / "instances.json", coco / "pictures") if not isinstance(s, tuple))
    assert [i.box3d is not None for i in scene.instances] == [False, True]
    things = next(shapes_scenes(1, seed=3))
    assert all(i.box3d is not None for i in things.instances)
    row = scene_row(things, SigmaGenOptions(tile=16, channel_drop=0.0, precision=("box3d",)), random.Random(0))
    assert set(row.meta["precision"]) == {"box3d"}
    spatial = np.asarray(row.images[1])
    assert spatial[..., 0].max() >= 10 and spatial[..., 2].max() > 0  # routing, and the boxes' depth
    masks = row.meta["layers"]
    assert len(masks) == len(things.extra["layers"]) and {"shape", "colour", "box"} <= set(masks[0])


def test_the_scene_scorer_reads_the_truth_and_rejects_a_blank():
    """The SIGMA-GEN evaluation scores the true pictures of held-out scenes at 100 % (a subject mostly hidden is
    not scored) with no extra object, and a blank grey picture at 0 %. More pictures that must fail are in
    tests/test_shapes_reader.py."""
    from sigma_studio.model.shapes.sigmagen_eval import score_scene, summarise

    truth, blank = [], []
    for scene in shapes_scenes(30, seed=11, subjects=(2, 4)):
        layers = scene.extra["layers"]
        truth.append({"meta": {"layers": layers}, "verdict": score_scene(scene.image, layers)})
        grey = Image.new("RGB", (64, 64), (200, 200, 200))
        blank.append({"meta": {"layers": layers}, "verdict": score_scene(grey, layers)})
    good, bad = summarise(truth)["all"], summarise(blank)["all"]
    assert good["right"] == 1.0 and good["scenes_all_right"] == 1.0 and good["extras"] == 0
    assert good["ordering"] == 1.0 and good["pairs"] > 5
    assert bad["right"] == 0.0 and bad["ordering"] == 0.0


def test_the_curriculum_runs_end_to_end_and_resumes(capsys, tmp_path):
    """Three chained finetune runs from the shapes model (toy sizes); a rerun finds every stage done."""
    import dataclasses

    from sigma_studio.finetune.sigmagen_recipe import STAGES, SigmaGenRecipe, run

    stages = tuple(dataclasses.replace(s, rows=6, steps=2) for s in STAGES)
    recipe = SigmaGenRecipe(out=str(tmp_path / "sg"), stages=stages, eval_rows=2, max_tokens=400, save_every=1,
                            decoder_steps=2, replay=0.5)  # fmt: skip
    seen = []
    model = run(recipe, lambda stage, msg: seen.append((stage, msg)))
    import pyarrow.parquet as pq

    # SIGMA-GEN's rows and, with --replay 0.5, as many of SIGMA's five families
    data = tmp_path / "sg" / "boxes" / "data"
    from collections import Counter

    from sigma_studio.model.shapes.tasks import MIX

    families = Counter(pq.read_table(data, columns=["family"]).column("family").to_pylist())
    assert {f: families[f] for f in MIX} == {f: max(2, round(6 * share)) for f, share in MIX.items()}
    assert pq.read_metadata(data / "train.parquet").num_rows == 6  # the stage's SIGMA-GEN rows, all kept
    assert model == tmp_path / "sg" / "decoder" / "model" and (model / "ema.safetensors").is_file()
    from safetensors.torch import load_file

    full, tuned = (load_file(str(d / "ae.safetensors")) for d in (tmp_path / "sg" / "full" / "model", model))
    assert all(torch.equal(full[k], tuned[k]) for k in full if k.startswith("encoder."))  # the latent space stays
    assert any(not torch.equal(full[k], tuned[k]) for k in full if k.startswith("decoder."))
    mot, mot_full = (load_file(str(d / "ema.safetensors")) for d in (model, tmp_path / "sg" / "full" / "model"))
    assert mot.keys() == mot_full.keys() and all(torch.equal(mot[k], mot_full[k]) for k in mot)  # the MoT stays
    assert any(m.startswith("held-out PSNR") for _, m in seen)
    assert [m for _, m in seen if m.startswith("stage")] == [
        "stage 1/3: 2 steps from shapes",
        f"stage 2/3: 2 steps from {tmp_path / 'sg' / 'boxes' / 'model'}",
        f"stage 3/3: 2 steps from {tmp_path / 'sg' / 'structure' / 'model'}",
    ]
    assert sorted(p.name for p in (tmp_path / "sg" / "eval").iterdir()) == [f"{n}.parquet" for n in range(2, 6)]
    from sigma_studio.model.weights.arch_config import read_arch_config

    assert read_arch_config(model).routing_step == 50  # the shapes world's step, stored with every exported model
    # a finetune of the shipped model keeps what it was trained to read, and adds SIGMA-GEN's subjects
    assert read_arch_config(model).skills == ("attribute_tokens", "boxes", "subjects")
    assert read_arch_config(tmp_path / "sg" / "boxes" / "model").skills == ("attribute_tokens", "boxes", "subjects")
    again = []
    run(recipe, lambda stage, msg: again.append(msg))
    assert all(m.startswith("done earlier") for m in again)
    code, text = sigma(capsys, "sigmagen", "train", "--out", tmp_path / "sg", "--steps", "2,2")
    assert code == 2 and "--steps takes 3 positive counts" in text


def test_rows_of_another_routing_step_are_refused_before_training(tmp_path):
    from sigma_studio.finetune.sigmagen_recipe import SigmaGenRecipe, run
    from sigma_studio.model.data.dataset import write_parquet
    from sigma_studio.model.data.sigmagen import rows
    from sigma_studio.model.errors import InputError

    (tmp_path / "rows" / "boxes").mkdir(parents=True)
    write_parquet(tmp_path / "rows" / "boxes" / "train.parquet",
                  rows(shapes_scenes(2, seed=0), SigmaGenOptions(tile=16, routing_step=25), {}))  # fmt: skip
    recipe = SigmaGenRecipe(out=str(tmp_path / "sg"), data_dir=str(tmp_path / "rows"))
    assert recipe.step == 10  # rows of your own: the paper's step unless told
    with pytest.raises(InputError, match="made with --routing-step 25; train with --routing-step 25"):
        run(recipe)
    assert not (tmp_path / "sg" / "boxes" / "train").exists()


def test_the_evaluation_refuses_rows_of_another_routing_step(tmp_path):
    from types import SimpleNamespace

    from sigma_studio.finetune.sigmagen_recipe import make_eval
    from sigma_studio.model.config import ArchConfig
    from sigma_studio.model.errors import InputError
    from sigma_studio.model.shapes.sigmagen_eval import evaluate_sigmagen

    make_eval(tmp_path, per_count=1, seed=0, routing_step=50)
    paper_step = SimpleNamespace(arch=ArchConfig(routing_step=10))  # refused before anything is generated
    with pytest.raises(InputError, match="drawn at routing step 50, the model reads step 10"):
        evaluate_sigmagen(paper_step, tmp_path)


def test_sheet_rows_lay_the_sheet_out_and_travel_with_the_rows_the_model_and_the_evaluation(tiny_pipe, tmp_path):
    from types import SimpleNamespace

    from sigma_studio.finetune.sigmagen_recipe import make_eval
    from sigma_studio.model.config import ArchConfig
    from sigma_studio.model.errors import InputError
    from sigma_studio.model.evaluation.subjects import identity_cells
    from sigma_studio.model.shapes.sigmagen_eval import evaluate_sigmagen
    from sigma_studio.model.weights.arch_config import read_arch_config
    from sigma_studio.model.weights.loader import save_pipeline

    scene = next(iter(shapes_scenes(1, seed=3, subjects=(5, 5))))
    opts = SigmaGenOptions(tile=16, channel_drop=0.0, routing_step=50, sheet_rows=2, max_subjects=5)
    row = scene_row(scene, opts, random.Random(0))
    sheet = row.images[0]
    assert row.meta["sheet_rows"] == 2 and sheet.size == (48, 32)  # 5 subjects, 2 a column: 3 columns of 2 rows
    assert sum(c is not None for c in identity_cells(sheet, 5, 2)) == 5
    assert identity_cells(sheet, 5, 5) == [None] * 5  # read as the paper's one column: not laid out so
    with pytest.raises(InputError, match="--sheet-rows must be 1..10"):
        SigmaGenOptions(sheet_rows=0)
    pipe = SimpleNamespace(arch=tiny_pipe.arch.replace(sheet_rows=2), tokenizer=tiny_pipe.tokenizer,
                           model=tiny_pipe.model, vae=tiny_pipe.vae)  # fmt: skip
    stored = save_pipeline(pipe, tmp_path / "m")
    assert read_arch_config(stored).sheet_rows == 2 and read_arch_config(stored).routing_step == 10
    make_eval(tmp_path / "eval", per_count=1, seed=0, routing_step=50, sheet_rows=5)
    model_reads_two = SimpleNamespace(arch=ArchConfig(routing_step=50, sheet_rows=2))
    with pytest.raises(InputError, match="lays its identity sheets out 5 cells a column, the model reads 2"):
        evaluate_sigmagen(model_reads_two, tmp_path / "eval")


def test_the_autoencoder_ceiling_scores_the_true_pictures_round_tripped(tmp_path):
    import io

    import pyarrow.parquet as pq

    from sigma_studio.finetune.sigmagen_recipe import make_eval
    from sigma_studio.model import load_pipeline
    from sigma_studio.model.shapes.evaluate import reconstruction
    from sigma_studio.model.shapes.sigmagen_eval import evaluate_sigmagen

    pipe = load_pipeline("shapes", mode="cpu")
    make_eval(tmp_path, per_count=2, seed=0, routing_step=pipe.arch.routing_step, sheet_rows=pipe.arch.sheet_rows)
    summary, records = evaluate_sigmagen(pipe, tmp_path, reconstruct=True)
    assert summary["all"]["scenes"] == 8 and summary["all"]["subjects"] > 0 and all(r["seconds"] == 0 for r in records)
    truth = Image.open(io.BytesIO(pq.read_table(tmp_path / "2.parquet").to_pylist()[0]["image_list"][-1]))
    back = np.asarray(reconstruction(pipe, truth), np.float32)
    mse = ((back - np.asarray(truth.convert("RGB"), np.float32)) ** 2).mean()
    assert back.shape == (64, 64, 3) and 0 < mse < 255**2 / 10**1.5  # close to the truth (PSNR above 15 dB), not it


def test_the_papers_recipe_filters_rows_per_stage_and_trains_lora_with_prodigy(capsys, tmp_path):
    """--recipe paper, a dry run at toy sizes: one folder of rows with 2 to 5 subjects; each stage trains (two steps,
    LoRA rank 128, Prodigy) on exactly the rows in its subject range (≤ 4, ≥ 3, > 4)."""
    import dataclasses
    import itertools
    import json

    import pyarrow.parquet as pq

    from sigma_studio.finetune.sigmagen_recipe import PAPER_STAGES, SigmaGenRecipe, run
    from sigma_studio.model.data.dataset import write_parquet
    from sigma_studio.model.data.sigmagen import rows

    scenes = itertools.chain(shapes_scenes(6, seed=3, subjects=(2, 3)), shapes_scenes(6, seed=4, subjects=(4, 5)))
    write_parquet(tmp_path / "rows" / "train.parquet", rows(scenes, SigmaGenOptions(tile=64, routing_step=10), {}))
    counts = [len(json.loads(m)["subjects"]) for m in pq.read_table(tmp_path / "rows").column("meta").to_pylist()]
    stages = tuple(dataclasses.replace(s, steps=2) for s in PAPER_STAGES)
    recipe = SigmaGenRecipe.named("paper", out=str(tmp_path / "sg"), data_dir=str(tmp_path / "rows"), stages=stages,
                                  max_tokens=400, save_every=1)  # fmt: skip
    assert (recipe.optimizer, recipe.lora_rank, recipe.lr) == ("prodigy", 128, 1.0)
    assert [s.subjects for s in recipe.stages] == [(1, 4), (3, 10), (5, 10)]
    seen = []
    model = run(recipe, lambda stage, msg: seen.append(msg))
    assert model == tmp_path / "sg" / "more-than-4" / "model" and (model / "ema.safetensors").is_file()
    for stage in stages:
        kept = pq.read_table(tmp_path / "sg" / stage.name / "data" / "train.parquet").column("meta").to_pylist()
        assert len(kept) == sum(stage.subjects[0] <= n <= stage.subjects[1] for n in counts) > 0
        assert all(stage.subjects[0] <= len(json.loads(m)["subjects"]) <= stage.subjects[1] for m in kept)
        train = tmp_path / "sg" / stage.name / "train"
        state = json.loads((train / (train / "latest").read_text().strip() / "trainer_state.json").read_text())
        assert state["config"]["optimizer"] == "prodigy" and state["config"]["lora"]["rank"] == 128
    assert any("kept" in m and "outside" in m for m in seen)
    code, text = sigma(capsys, "sigmagen", "train", "--recipe", "papers", "--out", tmp_path / "x")
    assert code == 2 and "--recipe papers is not one of shapes, paper" in text


def test_the_world_recipe_draws_identity_sheets_in_its_starting_models_layout(tmp_path):
    """A finetune keeps the sheet layout its starting model was trained to read (the preset's may differ)."""
    import shutil

    from sigma_studio.finetune.sigmagen_recipe import SigmaGenRecipe
    from sigma_studio.model.hub import shipped_shapes_model

    assert SigmaGenRecipe().world_sheet_rows == 2  # the shipped shapes model: two cells a column
    start = tmp_path / "start"
    shutil.copytree(shipped_shapes_model(), start)
    config = json.loads((start / "sigma_config.json").read_text())
    config["arch"]["sheet_rows"] = 1
    (start / "sigma_config.json").write_text(json.dumps(config))
    assert SigmaGenRecipe(model=str(start)).world_sheet_rows == 1


def test_rows_of_your_own_never_resolve_the_starting_model_for_the_worlds_sheet_layout(tmp_path, monkeypatch):
    """The starting model's sheet layout is read only for the shapes world's rows: with --data-dir (rows that carry
    their own layout) a --model given as weights alone must not be resolved for it (it failed, or downloaded)."""
    import sigma_studio.model.hub as hub
    from sigma_studio.finetune.sigmagen_recipe import SigmaGenRecipe, run
    from sigma_studio.model.errors import InputError

    def refuse(*args, **kwargs):
        raise AssertionError("resolve() called for rows of your own")

    monkeypatch.setattr(hub, "resolve", refuse)
    recipe = SigmaGenRecipe(out=str(tmp_path / "run"), model=str(tmp_path / "weights-only"), data_dir=str(tmp_path))
    with pytest.raises(InputError, match="--data-dir has no .* folder of rows for stage 1"):
        run(recipe)


def test_a_stage_keeps_its_starting_models_skills_and_adds_subjects(tmp_path):
    import shutil

    from sigma_studio.finetune.sigmagen_recipe import trained_skills
    from sigma_studio.model.hub import shipped_shapes_model

    assert trained_skills("shapes") == ("attribute_tokens", "boxes", "subjects")
    start = tmp_path / "start"
    shutil.copytree(shipped_shapes_model(), start)
    config = json.loads((start / "sigma_config.json").read_text())
    config["arch"]["skills"] = ["attribute_tokens"]  # a model trained on SIGMA's tokens alone
    (start / "sigma_config.json").write_text(json.dumps(config))
    assert trained_skills(start) == ("attribute_tokens", "subjects")
    del config["arch"]["skills"]  # a finetune's checkpoint: what it reads is not known, so nothing is claimed
    (start / "sigma_config.json").write_text(json.dumps(config))
    assert trained_skills(start) is None


def test_replay_is_a_share_and_only_of_the_shapes_worlds_rows(capsys, tmp_path):
    import dataclasses

    from sigma_studio.finetune.sigmagen_recipe import SigmaGenRecipe, make_replay_data, run
    from sigma_studio.model.errors import InputError

    assert SigmaGenRecipe(replay=0.5).replay_rows == tuple(s.rows for s in SigmaGenRecipe().stages)
    assert SigmaGenRecipe().replay_rows == (0, 0, 0)
    make_replay_data(tmp_path / "none", 0, seed=0)
    assert not (tmp_path / "none").exists()  # no replay: no SIGMA rows beside the stage's
    with pytest.raises(InputError, match="--replay is a share of each stage's rows"):
        SigmaGenRecipe(out=str(tmp_path / "a"), replay=1.0)
    with pytest.raises(InputError, match="--replay mixes in the shapes world's SIGMA rows"):
        SigmaGenRecipe(out=str(tmp_path / "b"), replay=0.3, data_dir=str(tmp_path))
    code, text = sigma(capsys, "sigmagen", "train", "--out", tmp_path / "c", "--replay", "-0.1")
    assert code == 2 and "--replay is a share" in text and not (tmp_path / "c").exists()
    # a run folder made before --replay existed was made without it: resuming it with a replay is refused
    (tmp_path / "old").mkdir()
    before = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(SigmaGenRecipe(out=str(tmp_path / "old"))),
                                                     default=dataclasses.asdict)).items() if k != "replay"}  # fmt: skip
    (tmp_path / "old" / "recipe.json").write_text(json.dumps(before))
    with pytest.raises(InputError, match=r"holds a run made with other settings \(replay=0.0\)"):
        run(SigmaGenRecipe(out=str(tmp_path / "old"), replay=0.5))
