"""THE loader: build the network on the meta device, load a checkpoint's weights strictly, in a loading mode.

The architecture comes from the checkpoint's configs (:mod:`model.weights.arch_config`); this module builds, checks keys
and shapes strictly against the safetensors header, and fills the network (plain, bitsandbytes, or an accelerate
device map), and writes directories back.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..arch.autoencoder import AutoEncoder
from ..arch.bagel import Bagel
from ..config import DEFAULT_MODEL, ArchConfig, LoaderConfig
from ..errors import CheckpointError, InputError
from ..files import atomic_dir
from ..presets import PRESETS
from ..request.tokens import Tokenizer
from ..run.accel import parse_accel
from ..run.pipeline import SigmaPipeline
from .arch_config import (
    VAE_FACTORS,
    VIT_PREFIXES,
    config_files,
    find_weights,
    source_arch,
    tensor_shapes,
)
from .fp8 import check_fp8_device, quantize_fp8_
from .modes import QUANT_MODES, bitsandbytes_available, choose_mode, device_map_for, dispatch, probe, quantize_into

log = logging.getLogger(__name__)


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
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None

    def __call__(self, key: str) -> torch.Tensor:
        try:
            t = self._file.get_tensor(key)
        except (OSError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: tensor {key} could not be read ({exc})") from None
        return t.to(self.dtype) if self.dtype is not None and t.is_floating_point() else t

    def rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` of a tensor, read with plain file reads of only those bytes (a rank's shard of a
        sharded model). Unlike the memory map, nothing of the file stays mapped into the process afterwards."""
        if not hasattr(self, "_header"):
            with open(self.path, "rb") as fh:
                size = struct.unpack("<Q", fh.read(8))[0]
                self._header, self._base = json.loads(fh.read(size)), 8 + size
        info = self._header.get(key)
        if info is None or info["dtype"] not in _DTYPES:
            raise CheckpointError(f"{self.path}: tensor {key} is missing or of a type the sharded load cannot read")
        shape, (begin, end) = info["shape"], info["data_offsets"]
        row = (end - begin) // max(1, shape[0])
        with open(self.path, "rb") as fh:
            fh.seek(self._base + begin + start * row)
            data = bytearray(fh.read((stop - start) * row))
        if len(data) != (stop - start) * row:
            raise CheckpointError(f"{self.path} is truncated: rows {start}:{stop} of {key} are not all there")
        t = torch.frombuffer(data, dtype=_DTYPES[info["dtype"]]).reshape(stop - start, *shape[1:])
        return t.to(self.dtype) if self.dtype is not None and t.is_floating_point() else t


_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "I64": torch.int64}


@dataclass(frozen=True)
class DeferredWeights:
    """A weights file checked strictly against the network but not read yet: ``device="meta"`` loads return the
    network on the meta device with this attached as ``model.deferred_weights``, and the distributed trainer reads
    each rank's rows after sharding (no rank ever holds the whole model)."""

    reader: _TensorReader
    keys: frozenset[str]


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
    if device.type == "meta":
        model.deferred_weights = DeferredWeights(_TensorReader(weights, dtype), frozenset(found))
        return model
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


def load_pipeline(source: str | Path | LoaderConfig = DEFAULT_MODEL, **kwargs) -> SigmaPipeline:
    """Load a :class:`~model.run.pipeline.SigmaPipeline`: THE entry point of the CLI, the web UI and finetuning.

    Args:
        source: ``sigma`` (:data:`~model.config.DEFAULT_MODEL`), ``bagel``, ``shapes``, ``tiny``, a Hugging Face
            repo id, a local checkpoint directory, or a :class:`LoaderConfig`.
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
    from ..hub import HubOptions, resolve

    src = resolve(cfg.model, HubOptions(cfg.cache_dir, cfg.token, cfg.revision, cfg.local_files_only))
    weights = Path(cfg.weights) if cfg.weights else src.weights
    arch = source_arch(src, weights, visual_und=cfg.visual_und, **arch_overrides)
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
    # a deferred (meta) load still reads the small autoencoder
    vae = load_autoencoder(src.config_dir / "ae.safetensors", arch, "cpu" if device.type == "meta" else device)
    if mode == "fp8":
        check_fp8_device(device)
        quantize_fp8_(model)
    source = str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model  # loads it again anywhere
    pipe = SigmaPipeline(model, vae, tokenizer, name=src.name, device=device, mode=mode, source=source)
    pipe.mode_reason = reason
    return pipe.accelerate(parse_accel(cfg.accel, device.type, mode))


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
    return pipe.accelerate(parse_accel(cfg.accel, device.type, "tiny"))


def save_pipeline(pipe, directory: str | Path) -> Path:
    """Write a pipeline as a directory in the released layout (plus ``sigma_config.json``), atomically."""
    return write_model_dir(
        directory,
        pipe.arch,
        pipe.tokenizer,
        {"ema.safetensors": pipe.model.state_dict(), "ae.safetensors": pipe.vae.state_dict()},
    )


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
        for name, data in {**config_files(arch), **(json_files or {})}.items():
            (tmp / name).write_text(json.dumps(data, indent=1))
        for name, state in tensors.items():
            save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp / name)
        tokenizer.save(tmp)

    return atomic_dir(directory, fill)
