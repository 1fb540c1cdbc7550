"""A probe: the recipe's MoT with BAGEL's ViT reading each reference (docs/SHAPES.md, "Not yet tried").

SIGMA trains without BAGEL's understanding encoder, so a reference reaches the MoT only as autoencoder latents in the
generation expert, and the trained layout's ViT slots are zero vectors. BAGEL also reads every picture through a
SigLIP encoder into the understanding expert, the one that reads the words. This probe gives the recipe's MoT a toy
SigLIP (2 layers, width 96, 4 heads, MLP 192, patch 8 on the 64 px canvas: 8 x 8 tokens a reference, in its ViT
slots) and trains it with ``sigma finetune --vit``: the base is the shipped autoencoder and tokenizer with a fresh
MoT and ViT, the data and every other setting the recipe's MoT stage (``ShapesRecipe().train_config()``: 12 000
steps), then the model is exported as the recipe exports its MoT (no decoder stage, curriculum or background stage,
so it compares with docs/SHAPES.md's "the MoT alone" column). Rerun the same command to resume::

    python examples/shapes_vit.py runs/vit > runs/vit.log 2>&1      # about 80 minutes on 2 cores
    sigma shapes eval --model runs/vit/model --per-family 100 --json runs/vit/eval.json
    sigma sigmagen eval --model runs/vit/model --per-count 25 --json runs/vit/sigmagen.json
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from safetensors.torch import load_file

from sigma_studio.finetune.checkpoint import export, trained_steps
from sigma_studio.finetune.shapes_config import ShapesRecipe
from sigma_studio.finetune.shapes_stages import make_data
from sigma_studio.finetune.trainer import Trainer
from sigma_studio.model.config import ResizeSpec, ViTConfig
from sigma_studio.model.hub import shipped_shapes_model
from sigma_studio.model.presets import shapes
from sigma_studio.model.request.tokens import Tokenizer
from sigma_studio.model.weights.arch_config import read_arch_config
from sigma_studio.model.weights.loader import fresh_model, write_model_dir

VIT = ViTConfig(hidden_size=96, num_layers=2, num_heads=4, intermediate_size=192, patch_size=8, max_patches_per_side=8)
SLOT = ResizeSpec(64, 32, 8)  # a 64 px reference: 8 x 8 ViT tokens, as many as its latent tokens


def base(folder: Path) -> Path:
    """The shipped autoencoder and tokenizer, with a fresh MoT and toy ViT at the recipe's seed."""
    if (folder / "ae.safetensors").is_file():
        return folder
    shipped = shipped_shapes_model()
    arch = read_arch_config(shipped).replace(vit=VIT, vit_slot_transform=SLOT, vit_transform=SLOT)
    weights = {"ema.safetensors": fresh_model(arch, 0).state_dict()}
    weights["ae.safetensors"] = load_file(shipped / "ae.safetensors")
    write_model_dir(folder, arch, Tokenizer.from_dir(shipped), weights)
    return folder


def main(out: Path) -> None:
    recipe = ShapesRecipe(out=str(out), decoder_steps=0, curriculum_weight=0, balance_steps=0)
    make_data(recipe)
    resume = (out / "train" / "latest").is_file()
    cfg = dataclasses.replace(recipe.train_config(), model=str(base(out / "base")), vit=True, resume=resume)
    if not resume or trained_steps(out / "train") < recipe.steps:
        Trainer(cfg, lambda s: s.step % 100 or print(f"step {s.step} loss {s.loss:.4f}", flush=True)).run()
    print(export(out / "train", out / "model", skills=shapes().skills, ae_path=None))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/vit"))
