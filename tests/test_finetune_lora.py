"""LoRA finetuning on the CPU: adapters saved and merged, frozen embeddings but the attribute rows, every linear
layer but the output a target, and seeded runs that repeat (the workspace of tests/test_finetune.py)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from sigma_studio.finetune.config import LoRAConfig
from sigma_studio.finetune.lora import EMBED, EMBED_ROW_IDS, EMBED_ROWS
from sigma_studio.finetune.trainer import Trainer
from sigma_studio.model import InputError, load_pipeline
from tests import test_finetune
from tests.test_finetune import config, last_checkpoint, train

workspace = test_finetune.workspace  # the fixture: rows and a saved tiny model


def test_lora_run_saves_adapter_and_merged_weights(workspace, tiny_pipe):
    run = Trainer(config(workspace, "lora", steps=3, save_every=3, lora=LoRAConfig(rank=4, alpha=8.0))).run()
    ckpt = last_checkpoint(run)
    adapter = load_file(str(ckpt / "adapter.safetensors"))
    assert adapter and all("lora_" in k for k in adapter if k not in (EMBED_ROWS, EMBED_ROW_IDS))
    ids = list(tiny_pipe.tokenizer.ids.attributes)
    assert adapter[EMBED_ROW_IDS].tolist() == ids and adapter[EMBED_ROWS].shape == (15, 64)
    merged = load_pipeline(run)  # the merged EMA weights load like any checkpoint
    base = tiny_pipe.model.state_dict()
    for key in ("language_model.model.layers.0.self_attn.q_proj_moe_gen.weight",
                "language_model.model.layers.0.self_attn.q_proj.weight", "llm2vae.weight"):  # fmt: skip
        assert not torch.allclose(merged.model.state_dict()[key], base[key]), key  # all-linear: all adapted
    head = "language_model.lm_head.weight"
    assert torch.equal(merged.model.state_dict()[head], base[head])  # the output layer is not a target
    from sigma_studio.finetune.lora import load_adapter

    key = "language_model.model.layers.0.self_attn.q_proj_moe_gen.weight"
    as_adapter = load_pipeline(workspace / "tiny", visual_und=False)
    load_adapter(as_adapter.model, _adapter_dir(ckpt, run), merge=True)
    loaded = as_adapter.model.state_dict()
    torch.testing.assert_close(loaded[key], _raw_merged(ckpt, base, key), atol=1e-5, rtol=1e-5)
    assert torch.equal(loaded[EMBED][ids], adapter[EMBED_ROWS])  # the trained attribute rows come back
    assert not torch.equal(loaded[EMBED][ids], base[EMBED][ids])
    others = [i for i in range(base[EMBED].shape[0]) if i not in ids]
    assert torch.equal(loaded[EMBED][others], base[EMBED][others])


def _adapter_dir(ckpt, run):
    from sigma_studio.finetune.lora import ADAPTER_CONFIG

    (ckpt / ADAPTER_CONFIG).write_text(
        json.dumps({"base_model": "tiny", "rank": 4, "alpha": 8.0, "targets": LoRAConfig().targets})
    )
    return ckpt


def _raw_merged(ckpt, base, key):
    adapter = load_file(str(ckpt / "adapter.safetensors"))
    prefix = key[: -len(".weight")]
    a, b = adapter[f"{prefix}.lora_A.default.weight"], adapter[f"{prefix}.lora_B.default.weight"]
    return base[key] + (8.0 / 4) * b @ a


@pytest.mark.parametrize("mode", ["gen", "lora"])
def test_frozen_embedding_modes_still_train_the_attribute_rows(workspace, tiny_pipe, mode):
    """--train gen and LoRA freeze the token embeddings but the 15 attribute-token rows; every other row stays
    bit-identical in the weights, the EMA and the checkpoint (weight decay on, which would move them)."""
    kw = {"lora": LoRAConfig(rank=4, alpha=8.0)} if mode == "lora" else {"trainable": "gen"}
    trainer = Trainer(config(workspace, f"rows-{mode}", model="tiny", steps=3, save_every=3, weight_decay=0.1, **kw))
    trainer.run()
    ids = list(trainer.tokenizer.ids.attributes)
    base = tiny_pipe.model.state_dict()[EMBED]
    others = torch.ones(base.shape[0], dtype=torch.bool)
    others[ids] = False
    saved = load_file(str(last_checkpoint(trainer.run_dir) / "ema.safetensors"))[EMBED]
    for weight in (trainer.params[EMBED].detach(), trainer.ema[EMBED], saved):
        assert torch.equal(weight[others], base[others])
        assert not torch.equal(weight[ids], base[ids])
    if mode == "gen":
        frozen = "language_model.model.layers.0.self_attn.q_proj.weight"
        assert frozen not in trainer.params
        assert torch.equal(trainer.model.get_parameter(frozen), tiny_pipe.model.get_parameter(frozen))


def test_lora_targets_every_linear_but_the_output_layer():
    from torch import nn

    from sigma_studio.finetune.build import drop_vit
    from sigma_studio.finetune.lora import apply_lora

    model = load_pipeline("tiny").model
    drop_vit(model)
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    wrapped = {n for n, m in apply_lora(model, LoRAConfig()).named_modules() if hasattr(m, "lora_A")}
    assert wrapped == linears - {"language_model.lm_head"}
    assert {"llm2vae", "vae2llm", "time_embedder.mlp.0", "time_embedder.mlp.2"} <= wrapped
    assert not any(n.startswith(("vit_model", "connector", "encoder", "decoder")) for n in wrapped)
    regex = apply_lora(load_pipeline("tiny").model, LoRAConfig(targets=r".*mlp_moe_gen\.up_proj"))
    assert {n for n, m in regex.named_modules() if hasattr(m, "lora_A")} == {
        f"language_model.model.layers.{k}.mlp_moe_gen.up_proj" for k in range(2)
    }
    with pytest.raises(InputError, match="--lora-targets"):
        apply_lora(load_pipeline("tiny").model, LoRAConfig(targets="nothing_matches"))
    with pytest.raises(InputError, match="--lora-targets"):
        LoRAConfig(targets="(unclosed")


def test_lora_runs_with_the_same_seed_are_identical(workspace):
    kw = dict(model="tiny", steps=3, save_every=3, lora=LoRAConfig())
    first, first_losses = train(config(workspace, "seed-a", **kw))
    torch.rand(7)  # the global RNG moved on between the runs
    second, second_losses = train(config(workspace, "seed-b", **kw))
    other, _ = train(config(workspace, "seed-c", seed=1, **kw))
    assert first_losses == second_losses
    adapters = [load_file(str(last_checkpoint(t.run_dir) / "adapter.safetensors")) for t in (first, second, other)]
    assert all(torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])
    key = "language_model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    assert not torch.equal(adapters[0][key], adapters[2][key])  # the seed decides the initialisation
