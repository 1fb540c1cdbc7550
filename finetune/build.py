"""The network a run trains: loaded by the shared loader, without the ViT (the release trains with
``visual_und False``; ``--vit`` keeps it, as BAGEL trains), with its trainable set chosen and the gradient masks of
partly trained weights.

A fresh run and a resumed one build the same network here, so a resume continues bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sigma_studio.model import MissingDependencyError, load_pipeline
from sigma_studio.model.run.pipeline import SigmaPipeline

from .config import TrainConfig
from .distributed import local_tensor
from .lora import EMBED, apply_lora

VIT_MODULES = ("vit_model", "connector", "vit_pos_embed")
GLUE = ("vae2llm.", "llm2vae.", "time_embedder.", "attribute_embed.")


def load(cfg: TrainConfig, resume: Path | None, lora_on_gpu: bool, sharded: bool = False) -> SigmaPipeline:
    """The starting pipeline: ``--model`` (its weights, or a fresh seeded initialisation with ``--init random``),
    or the checkpoint ``resume`` of a full finetune (which holds every weight). Its network has no ViT unless
    ``cfg.vit`` keeps the source's (BAGEL's training).

    ``sharded`` (several ranks, a full finetune from a weights file): the network stays on the meta device with
    its checked weights file attached, and each rank reads its own rows after sharding
    (:func:`distributed.fill_shards`)."""
    full_resume = resume is not None and cfg.lora is None
    deferred = sharded and cfg.sharded_load and cfg.lora is None and (cfg.init == "weights" or full_resume)
    # init= only when asked: the loader option is recent, and resuming a full run loads the checkpoint's weights
    fresh = {"init": "random", "seed": cfg.seed} if cfg.init == "random" and not full_resume else {}
    pipe = load_pipeline(
        str(resume) if full_resume else cfg.model,
        weights=str(resume / "model.safetensors") if full_resume else None,
        mode="cpu",
        # LoRA keeps the frozen base in bf16 on GPUs; full finetuning keeps float32 master weights
        dtype=torch.bfloat16 if lora_on_gpu else torch.float32,
        visual_und=cfg.vit,
        cache_dir=cfg.cache_dir,
        **({"device": "meta"} if deferred else {}),
        **fresh,
    )
    if not cfg.vit:
        drop_vit(pipe.model)
    return pipe


def drop_vit(model: nn.Module) -> None:
    """Remove the ViT, its connector and position table (a source the loader built them for, e.g. ``tiny``)."""
    if model.cfg.vit is None:
        return
    for name in VIT_MODULES:
        if hasattr(model, name):
            delattr(model, name)
    model.cfg = model.cfg.replace(vit=None)


def prepare(model: nn.Module, cfg: TrainConfig, attribute_ids: tuple[int, ...]) -> tuple[nn.Module, dict]:
    """Set the training options on ``model``, add LoRA adapters or choose the trainable weights.

    Returns the model (peft wraps it in place) and the gradient masks: parameter name -> [rows, 1] float mask
    of the rows that train. Modes that freeze the token embeddings (``--train gen``, LoRA) still train the
    SIGMA attribute-token rows ``attribute_ids``; the mask zeroes the gradient of every other row.
    """
    model.cfg = model.cfg.replace(
        group_mask=cfg.group_mask, group_mask_scope=cfg.group_mask_scope, default_layout="trained"
    )
    if cfg.attribute_projection:
        model.enable_attribute_projection()
    if cfg.lora is not None:
        model.requires_grad_(False)
        model = apply_lora(model, cfg.lora, seed=cfg.seed)
        if cfg.attribute_projection:
            model.attribute_embed.requires_grad_(True)
    else:
        select_trainable(model, cfg)
    embedding = model.get_parameter(EMBED)
    masks = {}
    if not embedding.requires_grad:
        embedding.requires_grad_(True)
        masks[EMBED] = row_mask(embedding.shape[0], attribute_ids)
    if cfg.lora is not None:
        for p in model.parameters():  # adapters (and the masked embedding) train in float32 even over a bf16 base
            if p.requires_grad:
                p.data = p.data.float()
    return model, masks


def select_trainable(model: nn.Module, cfg: TrainConfig) -> None:
    """``--train all``: every weight but the fixed position tables (and lm_head without --text-loss; the ViT and its
    connector only with ``--vit``); ``--train gen``: the generation expert and its glue layers only."""
    gen_only = cfg.trainable == "gen"
    for name, p in model.named_parameters():
        fixed = name.endswith("pos_embed") or (name.startswith(("vit_model.", "connector.")) and not cfg.vit)
        fixed |= name.startswith("language_model.lm_head") and not cfg.text_loss
        in_gen = "_moe_gen" in name or name.startswith(GLUE)
        p.requires_grad_(not fixed and (in_gen or not gen_only))


def row_mask(num_rows: int, rows: tuple[int, ...]) -> torch.Tensor:
    """[num_rows, 1] float mask: 1 on ``rows``, 0 elsewhere."""
    mask = torch.zeros(num_rows, 1)
    mask[list(rows)] = 1.0
    return mask


def mask_gradients(params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
    """Zero the gradient of the frozen rows (after backward, before clipping): with zero gradients from the
    start, AdamW's moments of those rows stay zero and (weight decay 0 in their group) so do their updates,
    and the EMA of an unchanged row is unchanged, so they stay bit-identical.

    ``masks`` are laid out like their parameters (:func:`distributed.local_shard`)."""
    with torch.no_grad():
        for name, mask in masks.items():
            grad = params[name].grad
            if grad is not None:
                local_tensor(grad).mul_(local_tensor(mask).to(grad.dtype))


def make_optimizer(cfg: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """The run's optimizer over ``groups``: AdamW (the release), or Prodigy (the SIGMA-GEN paper's; its ``lr`` is a
    multiplier of the step size it estimates, and the cosine schedule scales that multiplier)."""
    if cfg.optimizer == "prodigy":
        try:
            from prodigyopt import Prodigy
        except ImportError:
            raise MissingDependencyError("prodigyopt", "recipes", "--optimizer prodigy") from None
        return Prodigy(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
