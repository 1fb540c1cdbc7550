"""Finetuning on the CPU with the tiny model and a parquet dataset the tests write themselves."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from finetune.config import LoRAConfig, TrainConfig
from finetune.data import DropConfig, build_sample
from finetune.packing import pack
from finetune.trainer import Trainer
from model import InputError, load_pipeline
from model.dataset import SigmaRow
from model.loader import save_pipeline
from model.masks import plan_mask
from model.packed import packed_forward

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


def losses(cfg: TrainConfig, stop_at: int | None = None) -> list[float]:
    seen = []

    def on_step(s):
        seen.append(s.loss)
        if stop_at is not None and s.step == stop_at:
            raise KeyboardInterrupt  # a kill after this step's checkpoint

    with contextlib.suppress(KeyboardInterrupt):  # the simulated kill
        Trainer(cfg, on_step).run()
    return seen


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


def test_resume_after_a_kill_gives_the_same_next_step_loss(workspace):
    straight = losses(config(workspace, "straight", steps=5))
    cfg = config(workspace, "killed", steps=5, save_every=3)
    first = losses(cfg, stop_at=4)  # killed after step 4, whose checkpoint would be at 6: resume from 3
    assert first[:4] == straight[:4]
    resumed = losses(cfg.replace(resume=True))
    assert resumed == pytest.approx(straight[3:], rel=1e-6, abs=1e-7)


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
    from model.batch import row_prompt

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


def test_lora_run_saves_adapter_and_merged_weights(workspace, tiny_pipe):
    run = Trainer(config(workspace, "lora", steps=3, save_every=3, lora=LoRAConfig(rank=4, alpha=8.0))).run()
    ckpt = run / (run / "latest").read_text()
    adapter = load_file(str(ckpt / "adapter.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    merged = load_pipeline(run)  # the merged EMA weights load like any checkpoint
    base = tiny_pipe.model.state_dict()
    key = "language_model.model.layers.0.self_attn.q_proj_moe_gen.weight"
    assert not torch.allclose(merged.model.state_dict()[key], base[key])
    und = "language_model.model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(merged.model.state_dict()[und], base[und])  # not a LoRA target: untouched
    from finetune.lora import load_adapter

    as_adapter = load_pipeline(workspace / "tiny", visual_und=False)
    load_adapter(as_adapter.model, _adapter_dir(ckpt, run), merge=True)
    torch.testing.assert_close(as_adapter.model.state_dict()[key], _raw_merged(ckpt, base, key), atol=1e-5, rtol=1e-5)


def _adapter_dir(ckpt, run):
    from finetune.lora import ADAPTER_CONFIG

    (ckpt / ADAPTER_CONFIG).write_text(
        json.dumps({"base_model": "tiny", "rank": 4, "alpha": 8.0, "targets": LoRAConfig().targets})
    )
    return ckpt


def _raw_merged(ckpt, base, key):
    adapter = load_file(str(ckpt / "adapter.safetensors"))
    prefix = key[: -len(".weight")]
    a, b = adapter[f"{prefix}.lora_A.default.weight"], adapter[f"{prefix}.lora_B.default.weight"]
    return base[key] + (8.0 / 4) * b @ a


def test_two_process_torchrun_on_cpu(workspace):
    out = workspace / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "sigma_cli.main", "finetune",
        "--dataset", str(workspace / "data"), "--model", str(workspace / "tiny"), "--out", str(out),
        "--steps", "2", "--max-tokens", "300", "--save-every", "2", "--held-out", "0", "--warmup", "1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = out / (out / "latest").read_text()
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 2 and len(state["positions"]) == 2
    assert load_pipeline(out).arch.llm.hidden_size == 64


def test_sample_images_are_written_every_n_steps(workspace):
    run = Trainer(config(workspace, "samples", steps=2, sample_every=2, sample_prompts=1, sample_steps=2)).run()
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-000002-0.png"]
