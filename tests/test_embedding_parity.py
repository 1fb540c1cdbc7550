"""Training and inference build the same input embeddings for the same blocks (SIGMA eq. 4 included).

One row is laid out by the training rules, packed, and embedded by the packed training forward; each of its
reference blocks is embedded again by the inference prefill's :func:`model.run.engine.block_embeddings`. With the
attribute projection on (and non-zero attribute vectors), every row must agree, the zero-input ViT slots too.
"""

from __future__ import annotations

import io

import torch
from PIL import Image

from sigma_studio.finetune.data import DropConfig, build_sample
from sigma_studio.finetune.packing import pack
from sigma_studio.model import load_pipeline
from sigma_studio.model.data.dataset import SigmaRow
from sigma_studio.model.run.engine import BlockInputs, attribute_rows, block_embeddings
from sigma_studio.model.run.packed import pack_latents, packed_forward


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_training_and_inference_embed_every_row_alike():
    pipe = load_pipeline("tiny", seed=0, attribute_projection=True, visual_und=False)
    model = pipe.model.float()
    model.cfg = model.cfg.replace(vit=None)
    with torch.no_grad():
        model.attribute_embed.weight.normal_(generator=torch.Generator().manual_seed(1))
    row = SigmaRow(
        "compose-000000",
        "Draw the <subject>shape <image_1> in the <style>colour of <image_2>.",
        tuple(_png(Image.new("RGB", (64, 64), c)) for c in ((220, 40, 40), (40, 80, 220), (40, 170, 60))),
    )
    sample = build_sample(row, model.cfg, pipe.tokenizer, torch.Generator().manual_seed(0), DropConfig(0, 0, 0))
    assert [b.kind for b in sample.plan.blocks].count("vit") == 2  # the zero-input ViT slots are there
    batch = pack([sample], model.cfg, pipe.tokenizer.ids)
    latent = pipe.vae.encode(batch.padded_images, generator=torch.Generator().manual_seed(2))
    noise = torch.randn(batch.packed_vae_token_indexes.numel(), model.cfg.patch_latent_dim)
    with torch.no_grad():
        out = packed_forward(model, batch, latent, noise, 1.0)
    clean = pack_latents(latent.float(), batch.patchified_vae_latent_shapes, model.cfg.latent_patch_size)
    latents, k = {}, 0
    for block in sample.plan.blocks:
        if block.kind in ("vae", "noise"):
            n = block.grid[0] * block.grid[1]
            latents[block.part] = clean[k : k + n]
            k += n
    inputs = BlockInputs(latents, {})
    checked = 0
    for block, start in zip(sample.plan.blocks, sample.plan.offsets(), strict=True):
        if block.kind == "noise":
            continue  # the target is noised in training; at inference it is the query, not a prefilled block
        with torch.no_grad():
            want, _ = block_embeddings(model, block, inputs, pipe.tokenizer.ids, torch.device("cpu"))
        got = out.input_embeddings[start : start + block.length]
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        if block.attributes and block.kind in ("vae", "vit"):
            assert want[1:-1].abs().sum() > 0  # the attribute vector is really there
            checked += 1
    assert checked == 4  # two references, each a VAE block and a ViT slot with its attribute vector


def test_attribute_rows_skip_text_markers_and_target():
    from sigma_studio.model.run.sequence import Block

    pipe = load_pipeline("tiny", seed=0, attribute_projection=True)
    with torch.no_grad():
        pipe.model.attribute_embed.weight.fill_(1.0)
    blocks = [
        Block("text", 3, 0, 0, (1, 2, 3)),
        Block("vae", 4, 3, 1, image=0, grid=(1, 2), attributes=(0,)),
        Block("vit", 3, 4, 1, image=0, grid=(1, 1), zero_input=True, attributes=(0, 1)),
        Block("noise", 4, 5, 2, image=1, grid=(1, 2), attributes=(2,)),
    ]
    rows = attribute_rows(pipe.model, blocks)
    nonzero = rows.abs().sum(-1) > 0
    assert nonzero.tolist() == [False] * 3 + [False, True, True, False] + [False, True, False] + [False] * 4
    assert torch.allclose(rows[8], 2 * rows[4])  # two attributes sum


def test_training_and_inference_predict_the_same_velocity_for_every_family(monkeypatch):
    """The whole network, not only its inputs: a row of each family of the shapes world, as the trainer packs it
    at t = 1, and the same request through the pipeline's prefill and query (one Euler step from the same noise,
    no guidance). The released group mask, the trained layout, RoPE positions and the attribute projection all
    take part; both sides read the references' posterior means, so they see the same latents."""
    from sigma_studio.model.shapes.tasks import FAMILIES, examples

    pipe = load_pipeline("shapes", seed=0)
    model = pipe.model.float()
    assert model.cfg.group_mask and model.cfg.attribute_projection and model.cfg.default_layout == "trained"
    encode = pipe.vae.encode
    monkeypatch.setattr(pipe.vae, "encode", lambda x, eps=None, generator=None: encode(x))  # the posterior mean
    for family in FAMILIES:
        ex = next(examples(family, "eval", 1, seed=5))
        pngs = tuple(_png(img) for img in ex.images)
        row = SigmaRow(f"{family}-000000", ex.instruction, pngs)
        sample = build_sample(row, model.cfg, pipe.tokenizer, torch.Generator().manual_seed(0), DropConfig(0, 0, 0),
                              raw_timestep=float("inf"))  # fmt: skip
        batch = pack([sample], model.cfg, pipe.tokenizer.ids, model.cfg.group_mask, model.cfg.group_mask_scope)
        latent = pipe.vae.encode(batch.padded_images)
        noise = torch.randn(batch.packed_vae_token_indexes.numel(), model.cfg.patch_latent_dim,
                            generator=torch.Generator().manual_seed(1))  # fmt: skip
        with torch.no_grad():
            out = packed_forward(model, batch, latent, noise, 1.0)
        x1 = noise[out.t > 0]
        prompt = ex.instruction.replace("<image_", "<img")
        result = pipe(prompt, list(ex.images[:-1]), steps=2, cfg_text_scale=1.0, cfg_img_scale=1.0, latents=x1)
        torch.testing.assert_close(x1 - result.latents, out.mse_preds, rtol=1e-4, atol=1e-4, msg=family)
