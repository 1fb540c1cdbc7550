"""Training parity with the released trainer on the fixture's training cases (``SIGMA_PARITY_FIXTURE``).

* ``train_forward``: the recorded packed inputs and noise through our packed forward give the recorded MSE and
  CE (per token and reduced) within the README's tolerance.
* ``sigma_train_layout``: our data pipeline reads the case's parquet row and packs it into exactly the recorded
  layout (token ids, positions, splits, attention modes, loss positions), and the forward gives the recorded
  losses.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sigma_studio.finetune.data import DropConfig, build_sample
from sigma_studio.finetune.packing import pack
from sigma_studio.model.data.dataset import SigmaRow, iter_rows
from sigma_studio.model.run.packed import PackedBatch, packed_forward, reduce_losses
from tests.conftest import fixture_cases, fixture_pipeline, resize_spec

TOL = {"atol": 1e-4, "rtol": 1e-4}
FORWARD = fixture_cases("train_forward")
LAYOUT = fixture_cases("sigma_train_layout")


def _batch_from_recorded(case: dict, pi: dict[str, torch.Tensor]) -> PackedBatch:
    return PackedBatch(
        sequence_length=case["sequence_length"],
        packed_text_ids=pi["packed_text_ids"],
        packed_text_indexes=pi["packed_text_indexes"],
        packed_position_ids=pi["packed_position_ids"],
        packed_vae_token_indexes=pi["packed_vae_token_indexes"],
        packed_latent_position_ids=pi["packed_latent_position_ids"],
        packed_timesteps=pi["packed_timesteps"],
        patchified_vae_latent_shapes=[tuple(s) for s in case["patchified_vae_latent_shapes"]],
        padded_images=pi["padded_images"],
        mse_loss_indexes=pi["mse_loss_indexes"],
        attention_mask=pi["nested_attention_mask_0"] == 0,
        packed_vit_tokens=pi.get("packed_vit_tokens"),
        packed_vit_token_indexes=pi.get("packed_vit_token_indexes"),
        packed_vit_position_ids=pi.get("packed_vit_position_ids"),
        vit_token_seqlens=pi["vit_token_seqlens"].tolist() if "vit_token_seqlens" in pi else None,
        ce_loss_indexes=pi.get("ce_loss_indexes"),
        packed_label_ids=pi.get("packed_label_ids"),
        ce_loss_weights=pi.get("ce_loss_weights"),
    )


@pytest.mark.parametrize("case_dir", FORWARD, ids=[c.name for c in FORWARD])
def test_train_forward(case_dir: Path):
    case = json.loads((case_dir / "case.json").read_text())
    pi = load_file(str(case_dir / "packed_inputs.safetensors"))
    noise = load_file(str(case_dir / "noise.safetensors"))
    exp = load_file(str(case_dir / "expected.safetensors"))
    pipe = fixture_pipeline(case["visual_und"])
    batch = _batch_from_recorded(case, pi)
    latent = pipe.vae.encode(batch.padded_images, eps=noise["vae_posterior_eps"])
    torch.testing.assert_close(latent, pi["padded_latent"], **TOL)
    with torch.no_grad():
        out = packed_forward(pipe.model, batch, latent, noise["flow_noise_packed"], case["bagel_config_timestep_shift"])
    torch.testing.assert_close(out.mse_preds, exp["mse_preds"], **TOL)
    torch.testing.assert_close(out.mse, exp["mse"], **TOL)
    losses = reduce_losses(out, batch)
    torch.testing.assert_close(losses["mse"], exp["mse_loss"][0], atol=0, rtol=1e-4)
    if "ce" in exp:
        torch.testing.assert_close(out.ce, exp["ce"], **TOL)
        torch.testing.assert_close(out.ce_logits, exp["ce_logits"], **TOL)
        torch.testing.assert_close(losses["ce"], exp["ce_loss"][0], atol=0, rtol=1e-4)
        reweighted = reduce_losses(out, batch, reweight=True)["ce"]
        torch.testing.assert_close(reweighted, exp["ce_loss_reweighted"][0], atol=0, rtol=1e-4)


@pytest.fixture(scope="module", params=LAYOUT, ids=[c.name for c in LAYOUT])
def layout_case(request):
    case_dir = request.param
    case = json.loads((case_dir / "case.json").read_text())
    tr = case["transforms"]
    pipe = fixture_pipeline(
        case["visual_und"],
        vae_transform=resize_spec(tr["image_transform_args"]),
        vit_slot_transform=resize_spec(tr["vit_image_transform_args"]),
        vit_slot_grid=case["data_config"]["max_num_patch_per_side"],
    )
    rows = [r for r in iter_rows(iter([case_dir / case["parquet"]["file"]])) if isinstance(r, SigmaRow)]
    assert len(rows) == 1
    sample = build_sample(
        rows[0], pipe.arch, pipe.tokenizer, torch.Generator().manual_seed(0),
        DropConfig(0.0, 0.0, 0.0), raw_timestep=case["raw_timestep_draws"][0],
    )  # fmt: skip
    batch = pack([sample], pipe.arch, pipe.tokenizer.ids)
    return case_dir, case, pipe, batch


EXACT = (
    "packed_text_ids", "packed_text_indexes", "packed_position_ids", "packed_vae_token_indexes",
    "packed_vit_token_indexes", "packed_latent_position_ids", "mse_loss_indexes", "packed_vit_position_ids",
)  # fmt: skip


def test_layout_is_exactly_the_recorded_one(layout_case):
    case_dir, case, _, batch = layout_case
    pi = load_file(str(case_dir / "packed_inputs.safetensors"))
    for name in EXACT:
        assert torch.equal(getattr(batch, name), pi[name]), name
    assert batch.sequence_length == case["sequence_length"]
    assert batch.vit_token_seqlens == pi["vit_token_seqlens"].tolist()
    assert [list(s) for s in batch.patchified_vae_latent_shapes] == case["patchified_vae_latent_shapes"]
    assert torch.equal(torch.isinf(batch.packed_timesteps), torch.isinf(pi["packed_timesteps"]))
    finite = ~torch.isinf(pi["packed_timesteps"])
    assert torch.equal(batch.packed_timesteps[finite], pi["packed_timesteps"][finite])
    assert torch.equal(batch.attention_mask, pi["nested_attention_mask_0"] == 0)
    assert batch.ce_loss_indexes.numel() == 0  # SIGMA text carries no loss
    torch.testing.assert_close(batch.padded_images, pi["padded_images"], atol=1e-6, rtol=0)
    torch.testing.assert_close(batch.packed_vit_tokens, pi["packed_vit_tokens"], atol=1e-6, rtol=0)


def test_layout_forward_gives_the_recorded_losses(layout_case):
    case_dir, case, pipe, batch = layout_case
    noise = load_file(str(case_dir / "noise.safetensors"))
    exp = load_file(str(case_dir / "expected.safetensors"))
    latent = pipe.vae.encode(batch.padded_images, eps=noise["vae_posterior_eps"])
    with torch.no_grad():
        out = packed_forward(pipe.model, batch, latent, noise["flow_noise_packed"], case["bagel_config_timestep_shift"])
    torch.testing.assert_close(out.input_embeddings, exp["llm_input_sequence"], **TOL)
    assert out.input_embeddings[batch.packed_vit_token_indexes].abs().sum() == 0  # ViT slots: zero vectors
    torch.testing.assert_close(out.last_hidden, exp["llm_last_hidden_state"], **TOL)
    torch.testing.assert_close(out.clean_latents, exp["packed_latent_clean"], **TOL)
    torch.testing.assert_close(out.t, exp["packed_t"], **TOL)
    torch.testing.assert_close(out.mse_preds, exp["mse_preds"], **TOL)
    torch.testing.assert_close(out.mse, exp["mse"], **TOL)
    loss = reduce_losses(out, batch)["mse"]
    torch.testing.assert_close(loss, exp["mse_loss"].reshape(()), atol=0, rtol=1e-4)
    assert np.isclose(loss.item(), case["losses"]["mse_loss"], rtol=1e-4)
