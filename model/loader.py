"""THE loader: read a checkpoint directory, build the network on the meta device, load weights strictly.

A directory in the released layout holds ``llm_config.json``, ``vit_config.json``, ``ema.safetensors``,
``ae.safetensors`` and the tokenizer files. The architecture is read from the two JSON configs and from the
tensor shapes in the safetensors headers (VAE geometry, latent grid, ViT presence); the few values that are
hard-coded in the released Python code (VAE scale/shift, image transforms) take the released defaults and may be
overridden, or come from our own ``sigma_config.json`` when a directory has one.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
from pathlib import Path

import torch
from safetensors import safe_open

from .arch.autoencoder import AutoEncoder
from .arch.bagel import Bagel
from .config import PRESETS, ArchConfig, LLMConfig, LoaderConfig, ResizeSpec, VAEConfig, ViTConfig
from .errors import CheckpointError, InputError
from .files import atomic_dir
from .modes import QUANT_MODES, bitsandbytes_available, choose_mode, device_map_for, dispatch, probe, quantize_into
from .pipeline import SigmaPipeline
from .tokens import Tokenizer

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
    fields = {k: saved[k] for k in ("group_mask", "train_timestep_shift", "default_layout") if k in saved}
    try:
        for key in ("vae_transform", "vit_transform", "vit_slot_transform"):
            if key in saved:
                fields[key] = ResizeSpec(**saved[key])
        for key in ("vae_scale_factor", "vae_shift_factor"):
            if key in saved:
                fields[key] = float(saved[key])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the arch entry {key} is malformed ({exc}); {RESTORE}") from None
    return fields


def build_model(arch: ArchConfig, device: str | torch.device = "meta", dtype: torch.dtype = torch.float32) -> Bagel:
    """An uninitialised (meta) or randomly initialised network of this architecture."""
    with torch.device(device):
        model = Bagel(arch)
    if str(device) != "meta":
        model.init_fixed_tables()
    return model.to(dtype)


def check_keys(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], what: str) -> None:
    """Strict key and shape matching, with a message that names the first offenders."""
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
        raise CheckpointError(f"{what} does not match the architecture: {'; '.join(parts)}")
    bad = [k for k in found if tuple(found[k]) != tuple(expected[k])]
    if bad:
        k = bad[0]
        raise CheckpointError(
            f"{what}: {len(bad)} tensors have the wrong shape (first: {k} is {tuple(found[k])}, "
            f"the architecture expects {tuple(expected[k])})"
        )


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    check_keys(expected, {k: tuple(v.shape) for k, v in state.items()}, what)
    module.load_state_dict(state, strict=True, assign=True)


class _TensorReader:
    """Memory-mapped, tensor-by-tensor access to a safetensors file, casting before the move to a device."""

    def __init__(self, path: Path, dtype: torch.dtype | None):
        self.path, self.dtype = path, dtype
        try:
            self._file = safe_open(str(path), framework="pt", device="cpu")
        except (OSError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None

    def __call__(self, key: str) -> torch.Tensor:
        try:
            t = self._file.get_tensor(key)
        except (OSError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: tensor {key} could not be read ({exc})") from None
        return t.to(self.dtype) if self.dtype is not None and t.is_floating_point() else t


def _read_state(
    path: Path, device: torch.device, dtype: torch.dtype | None, keys: list[str] | None = None
) -> dict[str, torch.Tensor]:
    """Read (some keys of) a safetensors file tensor by tensor, casting each before it moves to ``device``.

    Casting per tensor keeps the peak at one copy of the model in the target dtype, also for float32 files
    (the SIGMA trainer saves float32 master weights: twice the size of the bf16 model).
    """
    read = _TensorReader(path, dtype)
    names = keys if keys is not None else list(tensor_shapes(path))
    return {k: read(k).to(device) for k in names}


def load_bagel(
    model_dir: str | Path,
    arch: ArchConfig,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    weights: str | Path | None = None,
    mode: str = "plain",
    device_map: dict | None = None,
    offload_dir: str | None = None,
    meta: Bagel | None = None,
) -> Bagel:
    """Build on meta, check the file's keys and shapes strictly from its header, then load.

    When the ViT is not built (``arch.vit is None``) the ViT, connector and ViT table keys of a BAGEL file are
    ignored by name, exactly as the released SIGMA loader ignores them; every other key must match.
    ``mode``: ``plain`` (all on ``device``), ``nf4``/``int8`` (bitsandbytes) or ``dispatch`` (``device_map``).
    ``meta``: the meta-device model of ``arch`` when the caller has built it already (it is filled in place).
    """
    device = torch.device(device)
    weights = Path(weights) if weights else find_weights(Path(model_dir))
    if not weights.is_file():
        raise CheckpointError(f"Weights file {weights} does not exist")
    model = meta.to(dtype) if meta is not None else build_model(arch, "meta", dtype)
    skip = VIT_PREFIXES if arch.vit is None else ()
    found = {k: s for k, s in tensor_shapes(weights).items() if not (skip and k.startswith(skip))}
    check_keys({k: tuple(v.shape) for k, v in model.state_dict().items()}, found, str(weights))
    if len(found) < len(tensor_shapes(weights)):
        log.info("ignoring the ViT/connector tensors of %s (the model is built without the ViT)", weights.name)
    return materialize(model, _TensorReader(weights, dtype), list(found), device, dtype, mode, device_map, offload_dir)


def materialize(
    model: Bagel,
    read,
    keys: list[str],
    device: torch.device,
    dtype: torch.dtype,
    mode: str = "plain",
    device_map: dict | None = None,
    offload_dir: str | None = None,
) -> Bagel:
    """Fill a meta-device model from ``read(key) -> tensor`` in a loading mode (the benchmark passes a reader
    of random tensors; the loader one of a safetensors file)."""
    if mode == "dispatch":
        model = dispatch(model, read, keys, device_map or {}, device, offload_dir)
    else:
        consumed: set[str] = set()
        if mode in QUANT_MODES:
            consumed = quantize_into(model, read, mode, device, dtype)
        rest = {k: read(k).to(device) for k in keys if k not in consumed}
        model.load_state_dict(rest, strict=False, assign=True)
    return model.eval().requires_grad_(False)


def load_autoencoder(
    path: str | Path, arch: ArchConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> AutoEncoder:
    with torch.device("meta"):
        vae = AutoEncoder(arch.vae)
    state = _read_state(Path(path), torch.device(device), dtype)
    _load_strict(vae, state, str(path))
    return vae.eval().requires_grad_(False)


def arch_to_json(arch: ArchConfig) -> dict:
    """What ``sigma_config.json`` stores so that a directory round-trips through :func:`read_arch_config`."""
    d = dataclasses.asdict(arch)
    return {
        "vae_scale_factor": arch.vae.scale_factor,
        "vae_shift_factor": arch.vae.shift_factor,
        "group_mask": arch.group_mask,
        "train_timestep_shift": arch.train_timestep_shift,
        "default_layout": arch.default_layout,
        "vae_transform": d["vae_transform"],
        "vit_transform": d["vit_transform"],
        "vit_slot_transform": d["vit_slot_transform"],
        "attribute_projection": arch.attribute_projection,
    }


def load_pipeline(source: str | Path | LoaderConfig = "sigma", **kwargs) -> SigmaPipeline:
    """Load a :class:`~model.pipeline.SigmaPipeline`: THE entry point of the CLI, the web UI and finetuning.

    Args:
        source: ``sigma`` (default), ``bagel``, ``tiny``, a Hugging Face repo id, a local checkpoint directory,
            or a :class:`LoaderConfig`.
        kwargs: :class:`LoaderConfig` fields (``mode``, ``device``, ``dtype``, ``weights``, ``cache_dir``,
            ``token``, ``max_gpu_memory``, ``offload_dir``, ``visual_und``, ``local_files_only``, ``seed``),
            or :class:`ArchConfig` fields (plus ``vae_scale_factor`` / ``vae_shift_factor``) that override the
            checkpoint's (e.g. ``group_mask=True``); any other keyword is an :class:`InputError` naming the nearest.

    ``tiny`` builds the toy architecture with seeded random weights and a byte-level tokenizer, for tests and
    smoke runs (its images are noise).
    """
    cfg, arch_overrides = _split_options(source, kwargs)
    if cfg.model == "tiny" and not Path(cfg.model).exists():
        return _tiny_pipeline(cfg, arch_overrides)
    from .hub import HubOptions, resolve

    src = resolve(cfg.model, HubOptions(cfg.cache_dir, cfg.token, cfg.revision, cfg.local_files_only))
    weights = Path(cfg.weights) if cfg.weights else src.weights
    arch = read_arch_config(src.config_dir, visual_und=cfg.visual_und, weights=weights, **arch_overrides)
    tokenizer = Tokenizer.from_dir(src.config_dir)  # before the weights: a damaged tokenizer fails in a second
    meta = build_model(arch, "meta")  # built once: the mode choice, the device map and the loading share it
    mode, reason = choose_mode(cfg.mode, meta, probe(), bitsandbytes_available(), cfg.device)
    device = torch.device(cfg.device or ("cpu" if mode == "cpu" else "cuda:0"))
    dtype = cfg.dtype or (torch.float32 if device.type == "cpu" and mode not in QUANT_MODES else torch.bfloat16)
    meta = meta.to(dtype)
    log.info("loading %s in %s mode (%s)", src.name, mode, reason)
    load_mode, device_map = mode if mode in QUANT_MODES else "plain", None
    if mode in ("offload", "multi-gpu"):
        device_map = device_map_for(meta, mode, probe(), cfg.max_gpu_memory, dtype, cfg.max_cpu_memory)
        load_mode = "dispatch"
    if cfg.init == "random":
        model = fresh_model(arch, cfg.seed, device, dtype)
    else:
        model = load_bagel(src.config_dir, arch, device, dtype, weights, load_mode, device_map, cfg.offload_dir, meta)
    vae = load_autoencoder(src.config_dir / "ae.safetensors", arch, device, torch.float32)
    source = str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model  # loads it again anywhere
    pipe = SigmaPipeline(model, vae, tokenizer, name=src.name, device=device, mode=mode, source=source)
    pipe.mode_reason = reason
    return pipe


def _split_options(source: str | Path | LoaderConfig, kwargs: dict) -> tuple[LoaderConfig, dict]:
    """(LoaderConfig, ArchConfig overrides) from ``load_pipeline``'s keywords; a misspelt one is an InputError."""
    loader_fields = [f.name for f in dataclasses.fields(LoaderConfig)]
    arch_fields = [f.name for f in dataclasses.fields(ArchConfig)] + list(VAE_FACTORS)
    unknown = [k for k in kwargs if k not in loader_fields and k not in arch_fields]
    if unknown:
        close = difflib.get_close_matches(unknown[0], loader_fields + arch_fields, n=1)
        hint = f"Did you mean {close[0]}?" if close else "See help(LoaderConfig) and help(ArchConfig)."
        raise InputError(
            f"load_pipeline got an unknown keyword {unknown[0]!r}; it takes LoaderConfig and ArchConfig fields. {hint}"
        )
    loader_kwargs = {k: v for k, v in kwargs.items() if k in loader_fields}
    if isinstance(source, LoaderConfig):
        cfg = source.replace(**loader_kwargs)
    else:
        cfg = LoaderConfig(model=str(source), **loader_kwargs)
    return cfg, {k: v for k, v in kwargs.items() if k not in loader_fields}


def fresh_model(
    arch: ArchConfig, seed: int, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Bagel:
    """The architecture with freshly initialised weights, a pure function of ``seed`` (training from scratch)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch, "cpu", torch.float32)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _tiny_pipeline(cfg: LoaderConfig, arch_overrides: dict) -> SigmaPipeline:
    arch = PRESETS["tiny"]().replace(**{k: v for k, v in arch_overrides.items() if k not in VAE_FACTORS})
    vae = {k.removeprefix("vae_"): v for k, v in arch_overrides.items() if k in VAE_FACTORS}
    arch = arch.replace(vae=dataclasses.replace(arch.vae, **vae)) if vae else arch
    if cfg.visual_und is False:  # the ViT is built last: the other weights do not change
        arch = arch.replace(vit=None)
    device = torch.device(cfg.device or "cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(arch, "cpu", torch.float32)
        torch.manual_seed(cfg.seed + 1)  # the autoencoder does not change with the network's options
        vae = AutoEncoder(arch.vae)
    model = model.to(device=device, dtype=cfg.dtype or torch.float32).eval().requires_grad_(False)
    vae = vae.to(device).eval().requires_grad_(False)
    pipe = SigmaPipeline(model, vae, Tokenizer.byte_level(), name="tiny", device=device, mode="tiny")
    pipe.mode_reason = "random toy weights: the output is noise"
    return pipe


def save_pipeline(pipe, directory: str | Path) -> Path:
    """Write a pipeline as a directory in the released layout (plus ``sigma_config.json``), atomically."""
    return write_model_dir(
        directory,
        pipe.arch,
        pipe.tokenizer,
        {"ema.safetensors": pipe.model.state_dict(), "ae.safetensors": pipe.vae.state_dict()},
    )


def _configs(arch: ArchConfig) -> dict[str, dict]:
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


def write_model_dir(
    directory: str | Path,
    arch: ArchConfig,
    tokenizer: Tokenizer,
    tensors: dict[str, dict[str, torch.Tensor]],
    json_files: dict[str, dict] | None = None,
) -> Path:
    """Write configs, tokenizer, safetensors files and extra JSON into ``directory``, atomically (an interrupted
    save never leaves a half-written checkpoint under ``directory``; a previous one stays intact)."""
    from safetensors.torch import save_file

    def fill(tmp: Path) -> None:
        for name, data in {**_configs(arch), **(json_files or {})}.items():
            (tmp / name).write_text(json.dumps(data, indent=1))
        for name, state in tensors.items():
            save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp / name)
        tokenizer.save(tmp)

    return atomic_dir(directory, fill)
