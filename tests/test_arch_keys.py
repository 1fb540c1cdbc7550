"""The full 7B architecture, built on the meta device, has exactly the released key table (BAGEL_SPEC §2).

The expected table is written out here from the spec's formulas, independently of the model code, so a renamed
module or a wrong shape fails loudly; strict loading is then a matter of matching it.
"""

from __future__ import annotations

import pytest
import torch

from sigma_studio.model.arch.autoencoder import AutoEncoder
from sigma_studio.model.errors import CheckpointError
from sigma_studio.model.presets import bagel_7b_mot, sigma_7b, tiny
from sigma_studio.model.weights.loader import _load_strict, build_model

D, L, HQ, HKV, HD, F_, V = 3584, 28, 28, 4, 128, 18944, 152064
DV, LV, FV = 1152, 26, 4304


def spec_llm_keys() -> dict[str, tuple[int, ...]]:
    keys = {
        "language_model.model.embed_tokens.weight": (V, D),
        "language_model.model.norm.weight": (D,),
        "language_model.model.norm_moe_gen.weight": (D,),
        "language_model.lm_head.weight": (V, D),
    }
    for i in range(L):
        p = f"language_model.model.layers.{i}."
        for s in ("", "_moe_gen"):
            keys[f"{p}input_layernorm{s}.weight"] = (D,)
            keys[f"{p}post_attention_layernorm{s}.weight"] = (D,)
            keys[f"{p}self_attn.q_proj{s}.weight"] = (HQ * HD, D)
            keys[f"{p}self_attn.q_proj{s}.bias"] = (HQ * HD,)
            for kv in ("k", "v"):
                keys[f"{p}self_attn.{kv}_proj{s}.weight"] = (HKV * HD, D)
                keys[f"{p}self_attn.{kv}_proj{s}.bias"] = (HKV * HD,)
            keys[f"{p}self_attn.o_proj{s}.weight"] = (D, HQ * HD)
            keys[f"{p}self_attn.q_norm{s}.weight"] = (HD,)
            keys[f"{p}self_attn.k_norm{s}.weight"] = (HD,)
            mlp = "mlp" + s
            keys[f"{p}{mlp}.gate_proj.weight"] = (F_, D)
            keys[f"{p}{mlp}.up_proj.weight"] = (F_, D)
            keys[f"{p}{mlp}.down_proj.weight"] = (D, F_)
    return keys


def spec_glue_keys() -> dict[str, tuple[int, ...]]:
    return {
        "time_embedder.mlp.0.weight": (D, 256),
        "time_embedder.mlp.0.bias": (D,),
        "time_embedder.mlp.2.weight": (D, D),
        "time_embedder.mlp.2.bias": (D,),
        "vae2llm.weight": (D, 64),
        "vae2llm.bias": (D,),
        "llm2vae.weight": (64, D),
        "llm2vae.bias": (64,),
        "latent_pos_embed.pos_embed": (4096, D),
    }


def spec_vit_keys() -> dict[str, tuple[int, ...]]:
    p = "vit_model.vision_model."
    keys = {
        f"{p}embeddings.patch_embedding.weight": (DV, 588),
        f"{p}embeddings.patch_embedding.bias": (DV,),
        f"{p}embeddings.position_embedding.weight": (4900, DV),
        f"{p}post_layernorm.weight": (DV,),
        f"{p}post_layernorm.bias": (DV,),
        "connector.fc1.weight": (D, DV),
        "connector.fc1.bias": (D,),
        "connector.fc2.weight": (D, D),
        "connector.fc2.bias": (D,),
        "vit_pos_embed.pos_embed": (4900, D),
    }
    for j in range(LV):
        q = f"{p}encoder.layers.{j}."
        for n in ("layer_norm1", "layer_norm2"):
            keys[f"{q}{n}.weight"] = keys[f"{q}{n}.bias"] = (DV,)
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            keys[f"{q}self_attn.{n}.weight"] = (DV, DV)
            keys[f"{q}self_attn.{n}.bias"] = (DV,)
        keys[f"{q}mlp.fc1.weight"], keys[f"{q}mlp.fc1.bias"] = (FV, DV), (FV,)
        keys[f"{q}mlp.fc2.weight"], keys[f"{q}mlp.fc2.bias"] = (DV, FV), (DV,)
    return keys


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_bagel_7b_key_table():
    got = shapes(build_model(bagel_7b_mot(), "meta"))
    want = {**spec_llm_keys(), **spec_glue_keys(), **spec_vit_keys()}
    assert got == want
    assert len(got) == 1223
    assert sum(torch.Size(s).numel() for s in got.values()) == 14_607_260_128


def test_sigma_7b_key_table_has_no_vit():
    got = shapes(build_model(sigma_7b(), "meta"))
    assert got == {**spec_llm_keys(), **spec_glue_keys()}


def test_per_expert_parameters_per_layer():
    layer = {k: v for k, v in spec_llm_keys().items() if ".layers.0." in k and "moe_gen" not in k}
    assert sum(torch.Size(s).numel() for s in layer.values()) == 233_058_048


def test_flux_autoencoder_key_table():
    with torch.device("meta"):
        vae = AutoEncoder(bagel_7b_mot().vae)
    got = shapes(vae)
    assert len(got) == 244
    assert sum(torch.Size(s).numel() for s in got.values()) == 83_819_683
    assert got["encoder.conv_out.weight"] == (32, 512, 3, 3)
    assert got["decoder.up.1.block.0.nin_shortcut.weight"] == (256, 512, 1, 1)
    assert got["decoder.up.0.block.0.nin_shortcut.weight"] == (128, 256, 1, 1)
    assert "decoder.up.0.upsample.conv.weight" not in got and "decoder.up.3.upsample.conv.weight" in got
    assert "encoder.down.3.downsample.conv.weight" not in got


def test_strict_loading_reports_missing_unexpected_and_shape():
    model = build_model(tiny(), "cpu")
    state = dict(model.state_dict())
    ok = {k: v.clone() for k, v in state.items()}
    _load_strict(build_model(tiny(), "meta"), ok, "ok.safetensors")

    missing = dict(ok)
    missing.pop("llm2vae.bias")
    with pytest.raises(CheckpointError, match="1 missing.*llm2vae.bias"):
        _load_strict(build_model(tiny(), "meta"), missing, "x")

    extra = dict(ok, **{"language_model.model.layers.9.mlp.up_proj.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="1 unexpected"):
        _load_strict(build_model(tiny(), "meta"), extra, "x")

    wrong = dict(ok, **{"vae2llm.bias": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"vae2llm.bias is \(3,\)"):
        _load_strict(build_model(tiny(), "meta"), wrong, "x")
