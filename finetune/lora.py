"""LoRA adapters through peft: apply, save, merge. The target-module list lives here only (LoRAConfig)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from model.errors import MissingDependencyError

from .config import LoRAConfig

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def _peft():
    try:
        import peft
    except ImportError:
        raise MissingDependencyError("peft", "train", "LoRA finetuning") from None
    return peft


def apply_lora(model: nn.Module, cfg: LoRAConfig) -> nn.Module:
    """Wrap the target linears of ``model`` with LoRA layers in place; only the adapters are trainable."""
    peft = _peft()
    config = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.targets)
    model = peft.inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    return model


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if "lora_" in k}


def save_adapter(model: nn.Module, cfg: LoRAConfig, directory: Path, base: str) -> None:
    from safetensors.torch import save_file

    save_file(adapter_state(model), directory / ADAPTER_WEIGHTS)
    meta = {"base_model": base, "rank": cfg.rank, "alpha": cfg.alpha, "dropout": cfg.dropout, "targets": cfg.targets}
    (directory / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=1))


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA layer into its base weight (W += alpha/r * B A) and put the plain linear back."""
    for name, module in list(model.named_modules()):
        if hasattr(module, "base_layer") and hasattr(module, "lora_A"):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.get_base_layer())
    return model


def load_adapter(model: nn.Module, directory: str | Path, merge: bool = True) -> nn.Module:
    """Apply a saved adapter to a base model (and merge it, by default, for full-speed inference)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = json.loads((directory / ADAPTER_CONFIG).read_text())
    cfg = LoRAConfig(meta["rank"], meta["alpha"], 0.0, meta["targets"])
    model = apply_lora(model, cfg)
    missing = model.load_state_dict(load_file(str(directory / ADAPTER_WEIGHTS)), strict=False)
    unexpected = [k for k in missing.unexpected_keys if not k.startswith("attribute_embed.")]
    if unexpected:
        raise ValueError(f"adapter keys do not match the model: {unexpected[:3]}")
    return merge_lora(model) if merge else model
