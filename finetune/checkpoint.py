"""Checkpoints: every save is a complete model directory (loadable by the shared loader) plus training state.

    runs/x/latest                    -> "checkpoints/step-000500" (replaced atomically after each save)
    runs/x/checkpoints/step-000500/  configs, tokenizer, ae.safetensors,
                                     ema.safetensors   EMA weights (LoRA merged in): what inference loads
                                     model.safetensors raw weights (full finetune) | adapter*.safetensors (LoRA)
                                     optimizer.safetensors, trainer_state.json (step, data positions, config)

A directory is written under a temporary name and renamed; ``latest`` moves only after the rename. A run
killed mid-save therefore keeps its previous checkpoint, and ``--resume`` starts from it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from sigma_studio.model.errors import CheckpointError

log = logging.getLogger(__name__)
STATE = "trainer_state.json"
LATEST = "latest"


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """A full optimizer state dict -> (tensors for safetensors, JSON-able rest)."""
    tensors, meta = {}, {"steps": {}, "param_groups": state.get("param_groups", [])}
    for fqn, slots in state.get("state", {}).items():
        for slot, value in slots.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                tensors[f"{fqn}::{slot}"] = value.detach().cpu().contiguous()
            else:
                meta["steps"].setdefault(fqn, {})[slot] = float(value)
    return tensors, meta


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[str, dict] = {}
    for key, value in tensors.items():
        fqn, slot = key.rsplit("::", 1)
        state.setdefault(fqn, {})[slot] = value
    for fqn, slots in meta["steps"].items():
        for slot, value in slots.items():
            state.setdefault(fqn, {})[slot] = torch.tensor(value)
    return {"state": state, "param_groups": meta["param_groups"]}


def merged_lora_state(state: dict[str, torch.Tensor], alpha: float, rank: int) -> dict[str, torch.Tensor]:
    """A state dict with peft LoRA layers -> plain keys with ``W + alpha/r * B @ A`` (what inference loads)."""
    out = {k: v for k, v in state.items() if "lora_" not in k}
    for key in [k for k in state if k.endswith("lora_A.default.weight")]:
        prefix = key[: -len(".lora_A.default.weight")]
        a, b = state[key].float(), state[f"{prefix}.lora_B.default.weight"].float()
        base = out.pop(f"{prefix}.base_layer.weight")
        out[f"{prefix}.weight"] = (base.float() + (alpha / rank) * (b @ a)).to(base.dtype)
        if f"{prefix}.base_layer.bias" in out:
            out[f"{prefix}.bias"] = out.pop(f"{prefix}.base_layer.bias")
    return out


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / LATEST
    if not pointer.is_file():
        return None
    path = run_dir / pointer.read_text().strip()
    if not (path / STATE).is_file():
        raise CheckpointError(f"{pointer} points at {path}, which is not a complete checkpoint")
    return path


def point_latest(run_dir: Path, checkpoint: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".latest.", dir=run_dir)
    with os.fdopen(fd, "w") as f:
        f.write(str(checkpoint.relative_to(run_dir)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, run_dir / LATEST)


def prune(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (never the one ``latest`` names) and stale temporaries."""
    ckpts = sorted((run_dir / "checkpoints").glob("step-*"))
    current = latest_checkpoint(run_dir)
    for path in ckpts[:-keep] if keep > 0 else []:
        if path != current:
            shutil.rmtree(path, ignore_errors=True)
    for stale in (run_dir / "checkpoints").glob(".step-*"):
        shutil.rmtree(stale, ignore_errors=True)


def read_state(checkpoint: Path) -> dict:
    try:
        return json.loads((checkpoint / STATE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{checkpoint / STATE} is unreadable ({exc})") from None


def trained_steps(run_dir: Path) -> int:
    """The optimizer steps the newest checkpoint of ``run_dir`` holds."""
    return read_state(latest_checkpoint(run_dir))["step"]


def export(
    run_dir: Path, target: Path, dtype: torch.dtype = torch.float16, ae_path: Path | None = None, **arch_changes
) -> Path:
    """The newest checkpoint's EMA weights (and its autoencoder and tokenizer) as a small model directory;
    ``ae_path``: another autoencoder file of the same architecture (a finetuned decoder); ``arch_changes`` are stored
    in its architecture (a SIGMA-GEN model's ``routing_step``)."""
    from safetensors.torch import load_file

    from sigma_studio.model.request.tokens import Tokenizer
    from sigma_studio.model.weights.arch_config import read_arch_config
    from sigma_studio.model.weights.loader import write_model_dir

    latest = latest_checkpoint(run_dir)
    arch = read_arch_config(latest).replace(**arch_changes)
    tokenizer = Tokenizer.from_dir(latest)
    ema = {k: v.to(dtype) for k, v in load_file(str(latest / "ema.safetensors")).items()}
    ae = {k: v.to(dtype) for k, v in load_file(str(ae_path or latest / "ae.safetensors")).items()}
    return write_model_dir(target, arch, tokenizer, {"ema.safetensors": ema, "ae.safetensors": ae})


# `sigma average`'s share of the finetune when none is given: the shapes recipe's averages (stages 7 and 9) use it
AVERAGE_WEIGHT = 0.5


def average_models(first: Path, second: Path, weight: float, target: Path) -> Path:
    """``target``: ``second``'s model directory with EMA weights ``(1 - weight) * first + weight * second`` (each
    tensor computed in float32, stored in ``second``'s dtype). Averaging a finetune with the model it started from
    (WiSE-FT, Wortsman et al. 2022) keeps much of what the finetune gained and of what it forgot. ``first``: a model
    directory or its weights file (the released weights beside BAGEL's configs); it must hold every tensor of
    ``second`` in the same shape, and its others (the ViT a finetune dropped) are left out, with a warning.
    ``second``'s configs, tokenizer and autoencoder are kept. The files are read a tensor at a time: the memory
    is about one model in ``second``'s dtype (the result), not three."""
    from sigma_studio.model.hub import weights_in
    from sigma_studio.model.request.tokens import Tokenizer
    from sigma_studio.model.weights.arch_config import read_arch_config
    from sigma_studio.model.weights.loader import write_model_dir

    what = f"{first} and {second}"
    first_file, second_file = (first if first.is_file() else weights_in(first)), weights_in(second)
    ema = averaged_weights(first_file or first / "ema.safetensors", second_file or second / "ema.safetensors",
                           weight, what)  # fmt: skip
    ae = readable(second / "ae.safetensors", what)
    return write_model_dir(
        target, read_arch_config(second), Tokenizer.from_dir(second), {"ema.safetensors": ema, "ae.safetensors": ae}
    )


def readable(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, or one line saying that ``path`` cannot be read (missing, truncated, foreign)."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:
        raise unreadable(path, what, exc) from exc


def unreadable(path: Path, what: str, exc: Exception) -> CheckpointError:
    return CheckpointError(f"cannot average {what}: {path} is not a readable safetensors file ({exc})")


def averaged_weights(first: Path, second: Path, weight: float, what: str) -> dict[str, torch.Tensor]:
    """``lerp(first, second, weight)`` over ``second``'s tensors, one at a time, in ``second``'s dtypes; refused
    (naming up to three tensors) before anything is computed when ``first`` lacks one or holds it in another shape."""
    import contextlib

    from safetensors import safe_open

    with contextlib.ExitStack() as stack:
        files = []
        for path in (first, second):
            try:
                files.append(stack.enter_context(safe_open(str(path), "pt")))
            except Exception as exc:  # a missing, truncated or foreign file: say which, in one line
                raise unreadable(path, what, exc) from exc
        a, b = files
        early, late = ({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()} for f in files)
        if differ := sorted(k for k in late if early.get(k) != late[k]):
            raise CheckpointError(f"cannot average {what}: their weights differ ({', '.join(differ[:3])})")
        if extra := sorted(early.keys() - late.keys()):
            log.warning("%d tensors of %s are not in %s and are left out (%s ...)", len(extra), first, second, extra[0])
        out = {}
        for key in late:
            tuned = b.get_tensor(key)
            out[key] = torch.lerp(a.get_tensor(key).float(), tuned.float(), weight).to(tuned.dtype)
        return out


# a layer's outputs into the residual stream: zeroed in a grown layer, which then adds nothing (both experts')
RESIDUAL_OUTPUTS = ("self_attn.o_proj", "mlp.down_proj", "mlp_moe_gen.down_proj")


def grow_depth(source: Path, target: Path) -> Path:
    """``target``: ``source``'s model directory twice as deep, computing exactly what ``source`` computes.

    Every decoder layer is followed by a copy of itself whose residual outputs (attention ``o_proj``, MLP
    ``down_proj``, both experts) are zero, so the copy adds nothing until it is trained: function-preserving depth
    up-scaling (Net2Net, Chen et al. 2016; stacked copies as in SOLAR's depth up-scaling, Kim et al. 2023). A
    finetune from ``target`` (``sigma finetune --init weights``) starts where ``source`` stands with twice its layers.
    Configs, tokenizer and autoencoder are kept; the EMA weights keep their dtype.
    """
    import dataclasses

    from safetensors.torch import load_file

    from sigma_studio.model.request.tokens import Tokenizer
    from sigma_studio.model.weights.arch_config import read_arch_config
    from sigma_studio.model.weights.loader import write_model_dir

    arch = read_arch_config(source)
    ema = load_file(str(source / "ema.safetensors"))
    grown, layers = {}, set()
    for key, value in ema.items():
        head, sep, rest = key.partition(".layers.")
        index, _, tail = rest.partition(".")
        if not sep or not index.isdigit():
            grown[key] = value
            continue
        layers.add(int(index))
        grown[f"{head}.layers.{2 * int(index)}.{tail}"] = value
        zero = tail.startswith(RESIDUAL_OUTPUTS)
        grown[f"{head}.layers.{2 * int(index) + 1}.{tail}"] = torch.zeros_like(value) if zero else value.clone()
    if layers != set(range(arch.llm.num_layers)):
        raise CheckpointError(
            f"cannot grow {source}: its weights hold layers {sorted(layers)[:3]}..., its config says "
            f"{arch.llm.num_layers}"
        )
    arch = arch.replace(llm=dataclasses.replace(arch.llm, num_layers=2 * arch.llm.num_layers))
    ae = load_file(str(source / "ae.safetensors"))
    return write_model_dir(target, arch, Tokenizer.from_dir(source), {"ema.safetensors": grown, "ae.safetensors": ae})
