"""Finetuning on the CPU with the tiny model and a parquet dataset the tests write themselves."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sigma_studio.finetune import build as finetune_build
from sigma_studio.finetune.config import LoRAConfig, TrainConfig
from sigma_studio.finetune.data import DropConfig, build_sample
from sigma_studio.finetune.lora import EMBED
from sigma_studio.finetune.packing import pack
from sigma_studio.finetune.trainer import Trainer
from sigma_studio.model import InputError, load_pipeline
from sigma_studio.model.data.dataset import SigmaRow
from sigma_studio.model.run.masks import plan_mask
from sigma_studio.model.run.packed import packed_forward
from sigma_studio.model.weights.arch_config import find_weights
from sigma_studio.model.weights.loader import save_pipeline

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def png(w: int, h: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


ROWS = [
    (
        "Put <id>the man <image_1> beside <subject>the dog <image_2> on a beach <image_3>",
        [png(48, 64, 1), png(64, 48, 2), png(64, 64, 3)],
    ),
    ("Make it <style>like <image_1>", [png(64, 64, 4), png(64, 48, 5)]),
    ("broken row", [b"not an image", png(64, 64, 6)]),
]  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_pipe):
    root = tmp_path_factory.mktemp("ft")
    save_pipeline(tiny_pipe, root / "tiny")
    data = root / "data"
    data.mkdir()
    table = pa.table(
        {
            "instruction_list": pa.array([[[r[0]]] for r in ROWS], type=pa.list_(pa.list_(pa.string()))),
            "image_list": pa.array([r[1] for r in ROWS], type=pa.list_(pa.binary())),
        }
    )
    pq.write_table(table, data / "edit-00000.parquet")
    return root


def config(ws, out: str, **kw) -> TrainConfig:
    base = dict(
        out=str(ws / out), dataset=str(ws / "data"), model=str(ws / "tiny"), steps=6, max_tokens=300, lr=1e-3,
        warmup=1, held_out=0.0, save_every=0, ema=0.9, trainable="all", tensorboard=False, drop_text=0.0,
        drop_vae=0.0, drop_vit=0.0,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def train(cfg: TrainConfig, stop_at: int | None = None) -> tuple[Trainer, list[float]]:
    """Run ``cfg``; with ``stop_at``, a simulated kill right after that step (before its checkpoint)."""
    seen = []

    def on_step(s):
        seen.append(s.loss)
        if stop_at is not None and s.step == stop_at:
            raise KeyboardInterrupt

    trainer = Trainer(cfg, on_step)
    with contextlib.suppress(KeyboardInterrupt):  # the simulated kill
        trainer.run()
    return trainer, seen


def losses(cfg: TrainConfig, stop_at: int | None = None) -> list[float]:
    return train(cfg, stop_at)[1]


def last_checkpoint(run):
    return run / (run / "latest").read_text()


def test_loss_falls_when_overfitting(workspace):
    """The loss on the training samples, measured with fixed noise and timesteps, falls clearly."""
    trainer = Trainer(config(workspace, "overfit", steps=60, lr=3e-3, max_tokens=400, ema=0.0))
    trainer.setup()
    g = torch.Generator().manual_seed(0)
    samples = [
        build_sample(SigmaRow(f"r-{k}", *ROWS[k]), trainer.arch, trainer.tokenizer, g, DropConfig(0, 0, 0))
        for k in range(2)
    ]
    before = trainer.evaluate(samples)
    stream = trainer.batches()
    seen = []
    for _ in range(60):
        batch, _pos = next(stream)
        seen.append(trainer.train_step(batch)["loss"])
        trainer.step += 1
    after = trainer.evaluate(samples)
    assert after < 0.85 * before, (before, after)
    assert np.mean(seen[-10:]) < np.mean(seen[:10])


RESUME_CASES = {
    "full": {},
    "lora": {"lora": LoRAConfig(rank=4, alpha=8.0)},
    "gen-repeats": {"trainable": "gen", "family_weights": {"edit": 1.5}},  # rows drawn 1 or 2 times
}


def test_a_resume_with_another_data_order_is_refused(workspace):
    """A checkpoint's place in the data is a place in its shuffled order: another --shuffle-rows or --seed would
    land elsewhere, silently skipping or repeating rows."""
    cfg = config(workspace, "order", steps=2, save_every=1)
    Trainer(cfg).run()
    for change in ({"shuffle_rows": 0}, {"seed": 7}):
        with pytest.raises(InputError, match="read its data with --shuffle-rows 10000 and --seed 4396"):
            Trainer(cfg.replace(steps=3, resume=True, **change)).run()


@pytest.mark.parametrize("case", RESUME_CASES)
def test_resume_after_a_kill_continues_bit_for_bit(workspace, case):
    """--model tiny (whose loader keeps the ViT) with dropout: a run killed after step 4 and resumed from its
    step-3 checkpoint gives the losses, weights, EMA, optimizer state and data counters of a straight run."""
    kw = dict(model="tiny", steps=5, drop_text=0.1, drop_vae=0.3, drop_vit=0.3, **RESUME_CASES[case])
    straight, straight_losses = train(config(workspace, f"straight-{case}", save_every=5, **kw))
    cfg = config(workspace, f"killed-{case}", save_every=3, **kw)
    _, first = train(cfg, stop_at=4)
    assert first == straight_losses[:4]
    resumed, rest = train(cfg.replace(resume=True))
    assert rest == straight_losses[3:]  # exactly
    assert vars(resumed.stats) == vars(straight.stats) and resumed.stats.rows > 0
    a, b = last_checkpoint(straight.run_dir), last_checkpoint(resumed.run_dir)
    weights = ["adapter.safetensors", "adapter_ema.safetensors"] if "lora" in kw else ["model.safetensors"]
    for name in [*weights, "ema.safetensors", "optimizer.safetensors"]:
        sa, sb = load_file(str(a / name)), load_file(str(b / name))
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), name
    state_a, state_b = (json.loads((c / "trainer_state.json").read_text()) for c in (a, b))
    assert state_a["positions"] == state_b["positions"] and state_a["data"] == state_b["data"]
    assert straight.arch.vit is None and resumed.arch.vit is None  # the release trains without the ViT
    assert not any(k.startswith(("vit_model.", "connector.", "vit_pos")) for k in load_file(str(a / "ema.safetensors")))


def test_saved_counters_match_the_saved_position(workspace):
    """A checkpoint's data counters cover exactly the rows before its position: the sample the packer read
    ahead (the first of the next batch) is not counted yet."""
    trainer, _ = train(config(workspace, "counters", model="tiny", steps=2, save_every=1, keep=5))
    for step in (1, 2):
        state = json.loads((trainer.run_dir / "checkpoints" / f"step-{step:06d}" / "trainer_state.json").read_text())
        epoch, row, repeat = state["positions"][0]
        read = len(ROWS) * epoch + row  # every row before the position, each read once
        assert repeat == 0 and state["data"]["rows"] == read
        assert state["data"]["used"] + state["data"]["bad"] + state["data"]["too_long"] == read


def test_existing_run_needs_resume(workspace):
    losses(config(workspace, "twice", steps=2, save_every=2))
    with pytest.raises(InputError, match="--resume"):
        Trainer(config(workspace, "twice", steps=2)).run()


def test_bad_rows_are_skipped_and_counted(workspace):
    trainer = Trainer(config(workspace, "bad", steps=3))
    trainer.run()
    assert trainer.stats.bad >= 1 and trainer.stats.used >= 2
    assert "cannot be decoded" in " ".join(trainer.stats.reasons)


def _samples(pipe):
    drop = DropConfig(0, 0, 0)
    g = torch.Generator().manual_seed(0)
    arch = pipe.arch.replace(vit=None)
    return arch, [build_sample(SigmaRow(f"r-{k}", *ROWS[k]), arch, pipe.tokenizer, g, drop) for k in range(2)]


def test_packing_isolates_samples(tiny_pipe):
    pipe = tiny_pipe
    model = load_pipeline("tiny").model
    model.cfg = model.cfg.replace(vit=None)
    arch, (a, b) = _samples(pipe)
    batch = pack([a, b], arch, pipe.tokenizer.ids)
    n_a = a.plan.length
    assert not batch.attention_mask[:n_a, n_a:].any() and not batch.attention_mask[n_a:, :n_a].any()
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    latent = pipe.vae.encode(batch.padded_images, generator=g())
    noise = torch.randn(batch.packed_vae_token_indexes.numel(), arch.patch_latent_dim, generator=g())
    with torch.no_grad():
        out1 = packed_forward(model, batch, latent, noise, 1.0)
        latent2 = latent.clone()
        latent2[-1] += 5.0  # perturb only sample b's target latent
        out2 = packed_forward(model, batch, latent2, noise, 1.0)
    assert torch.equal(out1.last_hidden[:n_a], out2.last_hidden[:n_a])
    assert not torch.equal(out1.last_hidden[n_a:], out2.last_hidden[n_a:])


def test_training_group_mask_matches_inference(tiny_pipe):
    from sigma_studio.model.data.batch import row_prompt

    arch, (a, _) = _samples(tiny_pipe)
    train_mask = pack([a], arch, tiny_pipe.tokenizer.ids, group_mask=True).attention_mask
    row = SigmaRow("r-0", *ROWS[0])
    images = row.decode_images()
    pipe = load_pipeline("tiny", vit_slot_transform=arch.vit_slot_transform)
    prepared = [pipe.prepare_image(img, "trained") for img in images[:-1]]
    plans = pipe.plan(row_prompt(row, len(images)), prepared, "trained")
    n = plans.full.length
    assert [b.length for b in plans.full.blocks] == [b.length for b in a.plan.blocks[: len(plans.full.blocks)]]
    assert torch.equal(train_mask[:n, :n], plan_mask(plans.full, group_mask=True))
    assert not torch.equal(train_mask[:n, :n], plan_mask(plans.full, group_mask=False))


def test_full_run_saves_a_loadable_model(workspace):
    run = Trainer(config(workspace, "full", steps=3, save_every=3, attribute_projection=True, group_mask=True)).run()
    ckpt = run / (run / "latest").read_text()
    assert {"ema.safetensors", "model.safetensors", "optimizer.safetensors", "trainer_state.json"} <= {
        p.name for p in ckpt.iterdir()
    }
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["group_mask"] and state["attribute_projection"] and state["step"] == 3
    raw, ema = load_file(str(ckpt / "model.safetensors")), load_file(str(ckpt / "ema.safetensors"))
    key = "language_model.model.layers.0.mlp_moe_gen.up_proj.weight"
    assert not torch.equal(raw[key], ema[key])  # the EMA is its own set of weights, not a view of the raw ones
    pipe = load_pipeline(run)
    assert pipe.arch.group_mask and pipe.arch.attribute_projection and pipe.arch.vit is None
    assert pipe("a <style>look <img1>", [Image.new("RGB", (64, 64))], steps=2, seed=0).image.size == (64, 64)


def test_random_init_asks_the_loader_for_fresh_seeded_weights(workspace, monkeypatch):

    calls = []
    real = finetune_build.load_pipeline

    def spy(source, **kwargs):
        calls.append((source, dict(kwargs)))
        kwargs.pop("init", None)  # the recorded call is what counts; load the weights either way
        return real(source, **kwargs)

    monkeypatch.setattr(finetune_build, "load_pipeline", spy)
    cfg = config(workspace, "random-init", steps=1, save_every=1, init="random", seed=7)
    Trainer(cfg).run()
    assert calls[-1][0] == cfg.model and calls[-1][1]["init"] == "random" and calls[-1][1]["seed"] == 7
    Trainer(cfg.replace(steps=2, resume=True)).run()  # the checkpoint holds full weights: load them as usual
    assert "init" not in calls[-1][1] and calls[-1][1]["weights"].endswith("model.safetensors")
    Trainer(config(workspace, "weights-init", steps=1)).run()
    assert "init" not in calls[-1][1] and "seed" not in calls[-1][1]
    with pytest.raises(InputError, match="--init"):
        config(workspace, "x", init="scratch")


def test_defaults_follow_the_release_recipe():
    """BAGEL_SPEC §10.8: full model, lr 2e-5, 0 warm-up, cosine over 30 000 steps to 1e-7; LoRA r 8, alpha 32,
    dropout 0.05 on all linear layers."""
    from sigma_studio.finetune.trainer import lr_at

    cfg = TrainConfig(out="x")
    assert (cfg.trainable, cfg.init, cfg.steps, cfg.warmup) == ("all", "weights", 30_000, 0)
    assert (cfg.lr, cfg.min_lr, cfg.betas, cfg.ema) == (2e-5, 1e-7, (0.9, 0.95), 0.9999)
    assert lr_at(0, cfg) == 2e-5 and lr_at(30_000, cfg) == pytest.approx(1e-7)
    assert LoRAConfig() == LoRAConfig(rank=8, alpha=32.0, dropout=0.05, targets="all-linear")


def test_cli_options_take_their_defaults_from_the_configs():
    import dataclasses
    import inspect

    from typer.testing import CliRunner

    from sigma_studio.cli.finetune import finetune
    from sigma_studio.cli.main import app
    from sigma_studio.finetune.config import INITS, TRAINABLE

    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    lora = {f"lora_{f.name}": f.default for f in dataclasses.fields(LoRAConfig)}
    renamed = {"train": "trainable"}
    comma_lists = {"label_sets"}  # a comma-separated string here, a tuple there
    for name, param in inspect.signature(finetune).parameters.items():
        if name == "lora":  # a switch here, a LoRAConfig | None there
            continue
        default = tuple(param.default.split(",")) if name in comma_lists else param.default
        if name in lora:
            assert default == lora[name], name
        elif renamed.get(name, name) in fields:
            assert default == fields[renamed.get(name, name)], name
    help_text = CliRunner().invoke(app, ["finetune", "--help"], env={"COLUMNS": "200"}).output
    assert " | ".join(TRAINABLE) in help_text and " | ".join(INITS) in help_text
    bad = CliRunner().invoke(app, ["finetune", "--out", "x", "--init", "scratch"])
    assert bad.exit_code == 2 and "--init scratch is not one of weights, random" in bad.output


def _torchrun(workspace, out, *extra: str) -> Path:
    """Two CPU ranks (gloo) for two steps; returns the checkpoint folder."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "sigma_studio.cli", "finetune",
        "--dataset", str(workspace / "data"), "--model", str(workspace / "tiny"), "--out", str(out),
        "--steps", "2", "--max-tokens", "300", "--save-every", "2", "--held-out", "0", "--warmup", "1", *extra,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / (out / "latest").read_text()


def test_two_process_torchrun_on_cpu(workspace):
    out = workspace / "ddp"
    ckpt = _torchrun(workspace, out, "--train", "gen")
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 2 and len(state["positions"]) == 2
    assert load_pipeline(out).arch.llm.hidden_size == 64
    # the gradient mask works on sharded (DTensor) embeddings: only the attribute-token rows moved
    ids = list(load_pipeline(workspace / "tiny").tokenizer.ids.attributes)
    base = load_file(str(workspace / "tiny" / "ema.safetensors"))[EMBED]
    trained = load_file(str(ckpt / "model.safetensors"))[EMBED]
    others = [i for i in range(base.shape[0]) if i not in ids]
    assert torch.equal(trained[others], base[others]) and not torch.equal(trained[ids], base[ids])


def test_sharded_load_trains_exactly_like_the_full_load(workspace):
    """Each rank reading only its rows of the weights file (the default under torchrun) starts from the same
    values as every rank loading the whole model: two steps later the weights are bit-identical."""
    sharded = _torchrun(workspace, workspace / "ddp-sharded", "--attribute-projection")
    full = _torchrun(workspace, workspace / "ddp-full-load", "--attribute-projection", "--full-load")
    sharded, full = (load_file(str(c / "model.safetensors")) for c in (sharded, full))
    assert sharded.keys() == full.keys() and "attribute_embed.weight" in sharded
    assert all(torch.equal(sharded[k], full[k]) for k in full)


def test_sample_images_are_written_every_n_steps(workspace):
    run = Trainer(config(workspace, "samples", steps=2, sample_every=2, sample_prompts=1, sample_steps=2)).run()
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-000002-0.png"]


def test_vit_keeps_bagels_understanding_encoder_and_trains_it(workspace):
    run = Trainer(config(workspace, "vit", steps=3, save_every=3, vit=True)).run()
    start = load_file(str(find_weights(workspace / "tiny")))
    trained = load_file(str(last_checkpoint(run) / "model.safetensors"))
    encoder = [k for k in trained if k.startswith(("vit_model.", "connector."))]
    assert encoder and all(k in start for k in encoder)
    assert any(not torch.equal(start[k], trained[k]) for k in encoder)  # it trains, beside the MoT
    pipe = load_pipeline(run)  # each reference is read through the ViT into its trained-layout slots
    assert pipe.arch.vit is not None and pipe.arch.default_layout == "trained"
    assert pipe("a <style>look <img1>", [Image.new("RGB", (64, 64))], steps=2, seed=0).image.size == (64, 64)
