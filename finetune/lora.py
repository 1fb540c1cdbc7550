"""LoRA adapters through peft: apply, save, merge, load. The target-module rule lives here only (LoRAConfig).

A LoRA run also trains the SIGMA attribute-token rows of the token embedding (a gradient mask keeps every other
row frozen), so an adapter file holds, besides the ``lora_A``/``lora_B`` weights, those rows and their token ids.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from torch import nn

from sigma_studio.model.errors import InputError, MissingDependencyError

from .config import ALL_LINEAR, LoRAConfig
from .seeds import seeded

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
OUTPUT_LAYER = "language_model.lm_head"  # peft's "all-linear" leaves the output layer alone
EMBED = "language_model.model.embed_tokens.weight"
EMBED_ROWS = "language_model.model.embed_tokens.trained_rows"  # [n, D] the rows of EMBED a LoRA run trains
EMBED_ROW_IDS = "language_model.model.embed_tokens.trained_row_ids"  # [n] their token ids


def _peft():
    try:
        import peft
    except ImportError:
        raise MissingDependencyError("peft", "train", "LoRA finetuning") from None
    return peft


def target_modules(model: nn.Module, targets: str) -> list[str]:
    """The linear layers ``targets`` selects: "all-linear" -> every ``nn.Linear`` but the output layer (peft's
    shorthand, which finds the output layer of transformers models only); else those whose name matches the regex.
    """
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if targets == ALL_LINEAR:
        return [name for name in linears if name != OUTPUT_LAYER]
    chosen = [name for name in linears if re.fullmatch(targets, name)]
    if not chosen:
        raise InputError(f"--lora-targets {targets!r} matches no linear layer (their names look like {linears[0]})")
    return chosen


def apply_lora(model: nn.Module, cfg: LoRAConfig, seed: int = 0) -> nn.Module:
    """Wrap the target linears of ``model`` with LoRA layers in place; only the adapters are trainable.

    ``lora_A`` gets peft's initialisation (Kaiming-uniform) drawn from a generator seeded by ``seed`` and the
    module name, so the adapters are a pure function of the seed; ``lora_B`` starts at zero.
    """
    peft = _peft()
    config = peft.LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=target_modules(model, cfg.targets)
    )
    with torch.random.fork_rng(devices=[]):  # peft draws its own init from the global RNG: leave it untouched
        model = peft.inject_adapter_in_model(config, model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_A." in name:
                nn.init.kaiming_uniform_(p, a=math.sqrt(5), generator=seeded(seed, "lora", name))
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    return model


def adapter_part(state: dict[str, torch.Tensor], row_ids: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
    """What a LoRA run trains, out of a full state dict: the adapters, the attribute vectors when they are on,
    and the ``row_ids`` rows of the token embedding (with their ids)."""
    out = {k: v for k, v in state.items() if "lora_" in k or k.startswith("attribute_embed.")}
    if row_ids and EMBED in state:
        ids = torch.tensor(row_ids, dtype=torch.long)
        out[EMBED_ROWS] = state[EMBED].index_select(0, ids.to(state[EMBED].device))
        out[EMBED_ROW_IDS] = ids
    return out


def with_embedding(part: dict[str, torch.Tensor], embedding: torch.Tensor) -> dict[str, torch.Tensor]:
    """An adapter part with its embedding rows written into a copy of the full ``embedding`` [V, D] (under
    ``EMBED``) instead of the two row keys; a part without rows is returned as it is."""
    if EMBED_ROWS not in part:
        return part
    out = {k: v for k, v in part.items() if k not in (EMBED_ROWS, EMBED_ROW_IDS)}
    full = embedding.detach().clone()
    full[part[EMBED_ROW_IDS].to(full.device)] = part[EMBED_ROWS].to(full.device, full.dtype)
    out[EMBED] = full
    return out


def load_adapter_state(model: nn.Module, part: dict[str, torch.Tensor]) -> list[str]:
    """Load an adapter part into a model that :func:`apply_lora` wrapped; returns the keys it did not use."""
    if EMBED_ROWS in part:
        embedding = model.get_parameter(EMBED)
        part = with_embedding(part, embedding)
        with torch.no_grad():
            embedding.copy_(part.pop(EMBED))
    return list(model.load_state_dict(part, strict=False).unexpected_keys)


def adapter_state(model: nn.Module, row_ids: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in adapter_part(model.state_dict(), row_ids).items()}


def adapter_config(cfg: LoRAConfig, base: str) -> dict:
    return {"base_model": base, "rank": cfg.rank, "alpha": cfg.alpha, "dropout": cfg.dropout, "targets": cfg.targets}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA layer into its base weight (W += alpha/r * B A) and put the plain linear back."""
    for name, module in list(model.named_modules()):
        if hasattr(module, "base_layer") and hasattr(module, "lora_A"):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.get_base_layer())
    return model


def load_adapter(model: nn.Module, directory: str | Path, merge: bool = True) -> nn.Module:
    """Apply a saved adapter to a base model (and merge it, by default, for full-speed inference).

    The adapted modules are those the file holds weights for, so a base model with more linears (a ViT, say)
    than the trained one gets no idle adapters.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = json.loads((directory / ADAPTER_CONFIG).read_text())
    part = load_file(str(directory / ADAPTER_WEIGHTS))
    adapted = sorted({k.split(".lora_A.")[0] for k in part if ".lora_A." in k})
    targets = "|".join(map(re.escape, adapted)) or meta["targets"]
    model = apply_lora(model, LoRAConfig(meta["rank"], meta["alpha"], 0.0, targets))
    unexpected = [k for k in load_adapter_state(model, part) if not k.startswith("attribute_embed.")]
    if unexpected:
        raise ValueError(f"adapter keys do not match the model: {unexpected[:3]}")
    return merge_lora(model) if merge else model
