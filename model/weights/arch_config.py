"""A checkpoint's architecture from its files: the JSON configs and the safetensors headers (never the tensors).

A directory in the released layout holds ``llm_config.json``, ``vit_config.json``, ``ema.safetensors``,
``ae.safetensors`` and the tokenizer files. The architecture is read from the two JSON configs and from the
tensor shapes in the safetensors headers (VAE geometry, latent grid, ViT presence); the few values that are
hard-coded in the released Python code (VAE scale/shift, image transforms) take the released defaults and may be
overridden, or come from our own ``sigma_config.json`` when a directory has one. A damaged file is one
:class:`~model.errors.CheckpointError` naming the file and what to do. ``arch_to_json`` and ``config_files`` write
the same files back, so a saved directory round-trips.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

from safetensors import safe_open

from ..config import GROUP_MASK_SCOPES, SKILLS, ArchConfig, LLMConfig, ResizeSpec, VAEConfig, ViTConfig
from ..errors import CheckpointError

log = logging.getLogger(__name__)

WEIGHT_FILES = ("ema.safetensors", "model.safetensors")
VIT_PREFIXES = ("vit_model.", "connector.", "vit_pos_embed.")
SIGMA_CONFIG = "sigma_config.json"
VAE_FACTORS = ("vae_scale_factor", "vae_shift_factor")  # loader keywords for values the released code hard-codes
# llm_config.json key -> LLMConfig field, for the sizes (rope_theta and rms_norm_eps keep their names)
LLM_SIZES = {
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "num_key_value_heads": "num_kv_heads",
    "intermediate_size": "intermediate_size",
    "vocab_size": "vocab_size",
}


# How every "this file is damaged" message ends.
RESTORE = "re-download or re-save the checkpoint"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path.name} is missing from {path.parent}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); {RESTORE}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} should hold a JSON object, not a {type(data).__name__}; {RESTORE}")
    return data


def _sizes(path: Path, data: dict, required: tuple[str, ...], optional: dict[str, int] | None = None) -> dict:
    """The size entries of an architecture config: present, and positive whole numbers."""
    missing = [k for k in required if k not in data]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; {RESTORE}")
    values = {**{k: data[k] for k in required}, **{k: data.get(k, v) for k, v in (optional or {}).items()}}
    bad = [f"{k} {v!r}" for k, v in values.items() if type(v) is not int or v < 1]
    if bad:
        what = "is not a positive whole number" if len(bad) == 1 else "are not positive whole numbers"
        raise CheckpointError(f"{path}: {', '.join(bad)} {what}; {RESTORE}")
    return values


def _divisible(path: Path, values: dict, key: str, by: str) -> None:
    if values[key] % values[by]:
        raise CheckpointError(f"{path}: {key} {values[key]} is not divisible by {by} {values[by]}; {RESTORE}")


def _positive_float(path: Path, data: dict, key: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise CheckpointError(f"{path}: {key} {value!r} is not a positive number; {RESTORE}")
    return float(value)


def _llm_config(path: Path) -> LLMConfig:
    data = _read_json(path)
    v = _sizes(path, data, tuple(LLM_SIZES))
    _divisible(path, v, "hidden_size", "num_attention_heads")
    _divisible(path, v, "num_attention_heads", "num_key_value_heads")
    floats = {k: _positive_float(path, data, k, getattr(LLMConfig, k)) for k in ("rope_theta", "rms_norm_eps")}
    return LLMConfig(**{name: v[key] for key, name in LLM_SIZES.items()}, **floats)


def _vit_config(path: Path) -> ViTConfig:
    data = _read_json(path)
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    v = _sizes(path, data, keys, {"patch_size": 14, "image_size": 980})
    _divisible(path, v, "hidden_size", "num_attention_heads")
    return ViTConfig(
        hidden_size=v["hidden_size"],
        num_layers=v["num_hidden_layers"] - 1,  # the released loaders drop the last SigLIP layer
        num_heads=v["num_attention_heads"],
        intermediate_size=v["intermediate_size"],
        patch_size=v["patch_size"],
        max_patches_per_side=v["image_size"] // v["patch_size"],
        layer_norm_eps=_positive_float(path, data, "layer_norm_eps", 1e-6),
    )


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape from a safetensors header, without reading the tensors."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except FileNotFoundError:
        raise CheckpointError(f"{path.name} is missing from {path.parent}") from None
    except Exception as exc:  # safetensors raises its own error types for a truncated or corrupt header
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None


def find_weights(model_dir: Path) -> Path:
    for name in WEIGHT_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
    raise CheckpointError(f"No weights in {model_dir}: expected one of {', '.join(WEIGHT_FILES)}")


def _vae_config(path: Path, scale: float, shift: float) -> VAEConfig:
    shapes = tensor_shapes(path)
    if not {"encoder.conv_in.weight", "decoder.conv_in.weight", "decoder.conv_out.weight"} <= shapes.keys():
        raise CheckpointError(f"{path} is not a FLUX-style autoencoder (no encoder/decoder conv tensors); {RESTORE}")
    ch = shapes["encoder.conv_in.weight"][0]
    levels = sorted({int(k.split(".")[2]) for k in shapes if k.startswith("encoder.down.")})
    ch_mult = tuple(shapes[f"encoder.down.{lv}.block.0.conv1.weight"][0] // ch for lv in levels)
    blocks = {int(k.split(".")[4]) for k in shapes if k.startswith("encoder.down.0.block.")}
    return VAEConfig(
        ch=ch,
        ch_mult=ch_mult,
        num_res_blocks=len(blocks),
        z_channels=shapes["decoder.conv_in.weight"][1],
        in_channels=shapes["encoder.conv_in.weight"][1],
        out_ch=shapes["decoder.conv_out.weight"][0],
        scale_factor=scale,
        shift_factor=shift,
    )


def read_arch_config(
    model_dir: str | Path,
    *,
    visual_und: bool | None = None,
    weights: str | Path | None = None,
    ae_path: str | Path | None = None,
    **overrides,
) -> ArchConfig:
    """Derive the :class:`ArchConfig` of a checkpoint directory.

    Args:
        model_dir: a directory in the released layout (or our finetune output layout).
        visual_und: build the ViT (``None``: when the weights contain it).
        weights: the weights file when it is not in ``model_dir`` (SIGMA weights with BAGEL's configs).
        ae_path: the autoencoder file when it is not ``model_dir/ae.safetensors``.
        overrides: ArchConfig fields to set, plus ``vae_scale_factor`` / ``vae_shift_factor``.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(f"Model directory {model_dir} does not exist")
    llm = _llm_config(model_dir / "llm_config.json")
    weights_path = Path(weights) if weights else find_weights(model_dir)
    shapes = tensor_shapes(weights_path)
    has_vit = any(k.startswith("vit_model.") for k in shapes)
    use_vit = has_vit if visual_und is None else visual_und
    if use_vit and not has_vit:
        raise CheckpointError(f"visual_und was requested but the weights in {model_dir} have no ViT")
    vit = _vit_config(model_dir / "vit_config.json") if use_vit else None
    saved = _saved_arch(model_dir / SIGMA_CONFIG)
    ae_path = Path(ae_path) if ae_path else model_dir / "ae.safetensors"
    vae = _vae_config(
        ae_path,
        overrides.pop("vae_scale_factor", saved.pop("vae_scale_factor", VAEConfig.scale_factor)),
        overrides.pop("vae_shift_factor", saved.pop("vae_shift_factor", VAEConfig.shift_factor)),
    )
    max_latent = math.isqrt(_shape(shapes, "latent_pos_embed.pos_embed", weights_path)[0])
    patch = math.isqrt(_shape(shapes, "vae2llm.weight", weights_path)[1] // vae.z_channels)
    max_px = max_latent * patch * vae.downsample
    fields: dict = dict(
        llm=llm,
        vit=vit,
        vae=vae,
        latent_patch_size=patch,
        max_latent_size=max_latent,
        vae_transform=ResizeSpec(max_px, max_px // 2, patch * vae.downsample),
        attribute_projection="attribute_embed.weight" in shapes,
        default_layout="released" if has_vit else "trained",
    )
    if vit is not None:
        fields["vit_transform"] = ResizeSpec(vit.max_patches_per_side * vit.patch_size, 224, vit.patch_size)
    fields.update(saved)
    fields.update(overrides)
    return ArchConfig(**fields)


def _shape(shapes: dict[str, tuple[int, ...]], key: str, path: Path) -> tuple[int, ...]:
    if key not in shapes:
        raise CheckpointError(f"{path} has no tensor {key}: it is not a complete BAGEL/SIGMA checkpoint; {RESTORE}")
    return shapes[key]


def _saved_arch(path: Path) -> dict:
    """The ArchConfig fields that our own ``sigma_config.json`` stores (see :func:`arch_to_json`); {} without one."""
    saved = _read_json(path).get("arch", {}) if path.is_file() else {}
    keys = ("group_mask", "group_mask_scope", "train_timestep_shift", "default_layout", "routing_step", "sheet_rows")
    fields = {k: saved[k] for k in keys if k in saved}
    if fields.get("group_mask_scope", GROUP_MASK_SCOPES[0]) not in GROUP_MASK_SCOPES:
        raise CheckpointError(f"{path}: the arch entry group_mask_scope is {fields['group_mask_scope']!r}, not one of "
                              f"{', '.join(GROUP_MASK_SCOPES)}; {RESTORE}")  # fmt: skip
    try:
        for key in ("vae_transform", "vit_transform", "vit_slot_transform"):
            if key in saved:
                fields[key] = ResizeSpec(**saved[key])
        for key in ("vae_scale_factor", "vae_shift_factor"):
            if key in saved:
                fields[key] = float(saved[key])
        if saved.get("skills") is not None:
            key = "skills"
            fields["skills"] = _skills(saved["skills"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the arch entry {key} is malformed ({exc}); {RESTORE}") from None
    return fields


def _skills(value) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ValueError(f"a list of skill names is expected, not {value!r}")
    unknown = sorted(set(value) - set(SKILLS))
    if unknown:
        raise ValueError(f"unknown skill {unknown[0]!r} (known: {', '.join(SKILLS)})")
    return tuple(value)


def arch_to_json(arch: ArchConfig) -> dict:
    """What ``sigma_config.json`` stores so that a directory round-trips through :func:`read_arch_config`."""
    d = dataclasses.asdict(arch)
    return {
        "vae_scale_factor": arch.vae.scale_factor,
        "vae_shift_factor": arch.vae.shift_factor,
        "group_mask": arch.group_mask,
        "group_mask_scope": arch.group_mask_scope,
        "train_timestep_shift": arch.train_timestep_shift,
        "default_layout": arch.default_layout,
        "routing_step": arch.routing_step,
        "sheet_rows": arch.sheet_rows,
        "vae_transform": d["vae_transform"],
        "vit_transform": d["vit_transform"],
        "vit_slot_transform": d["vit_slot_transform"],
        "attribute_projection": arch.attribute_projection,
        **({"skills": list(arch.skills)} if arch.skills is not None else {}),
    }


def config_files(arch: ArchConfig) -> dict[str, dict]:
    llm = arch.llm
    files = {
        "llm_config.json": {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            **{key: getattr(llm, name) for key, name in LLM_SIZES.items()},
            "rope_theta": llm.rope_theta,
            "rms_norm_eps": llm.rms_norm_eps,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
        },
        SIGMA_CONFIG: {"arch": arch_to_json(arch)},
    }
    if arch.vit is not None:
        vit = arch.vit
        files["vit_config.json"] = {
            "model_type": "siglip_vision_model",
            "hidden_size": vit.hidden_size,
            "num_hidden_layers": vit.num_layers + 1,  # the released file counts the dropped layer
            "num_attention_heads": vit.num_heads,
            "intermediate_size": vit.intermediate_size,
            "patch_size": vit.patch_size,
            "image_size": vit.max_patches_per_side * vit.patch_size,
            "layer_norm_eps": vit.layer_norm_eps,
            "hidden_act": "gelu_pytorch_tanh",
        }
    return files


def source_arch(src, weights: str | Path | None = None, **options) -> ArchConfig:
    """:func:`read_arch_config` of a resolved ``--model`` (:class:`model.hub.ResolvedSource`); a released model,
    whose configs do not say what it was trained to read, gets its preset's ``skills``."""
    arch = read_arch_config(src.config_dir, weights=weights, **options)
    if src.preset is not None and "skills" not in options:
        from ..presets import PRESETS

        arch = arch.replace(skills=PRESETS[src.preset]().skills)
    return arch
