"""Loading modes: where the weights live and in which precision.

* ``bf16``: everything on one GPU in bfloat16.
* ``fp8``: bf16 on one Ada/Hopper GPU, the decoder layers' linear layers in float8 through torchao (:mod:`.fp8`).
* ``nf4`` / ``int8``: the decoder's linear layers (both experts, and the unused-for-images ``lm_head``) quantised by
  bitsandbytes; embeddings, norms, the glue layers and the autoencoder stay in bf16 / fp32.
* ``offload``: an accelerate device map under a GPU memory budget (``max_gpu_memory``), the rest in CPU memory
  and then on disk; decoder layers move to the GPU when they run.
* ``multi-gpu``: an accelerate device map over every visible GPU.
* ``cpu``: float32 on the CPU (slow for the 7B model; the tiny model runs here).
* ``auto``: the best of these that fits the free GPU memory, with the reason.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..arch.bagel import Bagel
from ..config import MODES as MODES  # re-exported: the modes are defined in the leaf module config
from ..config import ArchConfig
from ..config import Mode as Mode
from ..errors import MissingDependencyError, UnsupportedModeError
from .fp8 import fp8_available

log = logging.getLogger(__name__)

QUANT_MODES = ("nf4", "int8")
GiB = 1024**3
# Activations and KV caches of a 1024x1024 output with three 1024x1024 references, three guidance branches.
ACTIVATION_RESERVE = 6 * GiB  # measured at 7B on an H200: 5.4 GiB above the bf16 weights
NO_SPLIT = ["MoTDecoderLayer", "SiglipEncoderLayer"]


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    total: int
    free: int


@dataclass(frozen=True)
class DeviceInfo:
    gpus: tuple[GPU, ...] = ()

    @property
    def cuda(self) -> bool:
        return bool(self.gpus)


def probe() -> DeviceInfo:
    if not torch.cuda.is_available():
        return DeviceInfo()
    gpus = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        gpus.append(GPU(i, torch.cuda.get_device_name(i), total, free))
    return DeviceInfo(tuple(gpus))


def bitsandbytes_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


@dataclass(frozen=True)
class ParamCounts:
    quant: int  # parameters in the decoder linears that nf4 / int8 quantise
    other: int  # every other parameter (kept in bf16)

    @property
    def total(self) -> int:
        return self.quant + self.other


def param_counts(model: nn.Module | ArchConfig) -> ParamCounts:
    """Parameter counts from the shapes of a meta-device model (the loader passes the one it loads into); an
    :class:`ArchConfig` is built on the meta device here, which allocates nothing."""
    if isinstance(model, ArchConfig):
        with torch.device("meta"):
            model = Bagel(model)
    quant = sum(
        m.weight.numel() for name, m in model.named_modules() if isinstance(m, nn.Linear) and is_quant_target(name)
    )
    return ParamCounts(quant, sum(p.numel() for p in model.parameters()) - quant)


def weight_bytes(model: nn.Module | ArchConfig | ParamCounts, mode: str) -> int:
    """Bytes the weights take in a mode: nf4 is 0.5 byte per weight plus block scales, cpu is float32, the GPU
    modes keep everything that is not quantised in bf16."""
    counts = model if isinstance(model, ParamCounts) else param_counts(model)
    if mode == "cpu":
        return counts.total * 4
    per_quant = {"nf4": 0.5 + 4 / 64, "int8": 1.0 + 4 / 4096, "fp8": 1.0 + 4 / 4096}.get(mode, 2.0)
    return int(counts.quant * per_quant + counts.other * 2)


def choose_mode(
    requested: str, model: nn.Module | ArchConfig, info: DeviceInfo, has_bnb: bool, device: str | None = None
) -> tuple[str, str]:
    """Resolve ``auto`` (and check an explicit mode) against the machine. Returns (mode, reason).

    ``model`` is the meta-device model to load (or its architecture): ``auto`` compares its weight sizes with the
    free GPU memory.
    An explicit ``device="cpu"`` runs the GPU-less variants of nf4/int8 (bitsandbytes' CPU backend) and of
    offload (CPU plus disk): slow, but it lets those paths run and be tested anywhere.
    """
    if requested not in MODES:
        raise UnsupportedModeError(f"--mode {requested} is not one of {', '.join(MODES)}")
    on_cpu = device is not None and torch.device(device).type == "cpu"
    if requested != "auto":
        if requested in ("bf16", "fp8", "multi-gpu") and on_cpu:
            raise UnsupportedModeError(f"--mode {requested} runs on GPUs; use --mode cpu for the CPU")
        if requested != "cpu" and not info.cuda and not on_cpu:
            raise UnsupportedModeError(f"--mode {requested} needs a CUDA GPU and none is visible; use --mode cpu")
        if requested == "fp8" and not fp8_available():
            raise MissingDependencyError("torchao", "fp8", "--mode fp8")
        if requested in QUANT_MODES and not has_bnb:
            raise MissingDependencyError("bitsandbytes", "quant", f"--mode {requested}")
        if requested == "multi-gpu" and len(info.gpus) < 2:
            raise UnsupportedModeError("--mode multi-gpu needs at least two visible GPUs; use bf16 or offload")
        return requested, "as requested"
    if not info.cuda or on_cpu:
        return "cpu", "no CUDA GPU is visible" if not info.cuda else "the CPU was asked for"
    free = max(g.free for g in info.gpus)
    gib = lambda b: f"{b / GiB:.1f} GiB"  # noqa: E731
    counts = param_counts(model)
    need = weight_bytes(counts, "bf16") + ACTIVATION_RESERVE
    if free >= need:
        return "bf16", f"{gib(free)} free on one GPU, bf16 needs about {gib(need)}"
    if len(info.gpus) > 1 and sum(g.free for g in info.gpus) >= need:
        return "multi-gpu", f"{len(info.gpus)} GPUs together have {gib(sum(g.free for g in info.gpus))} free"
    if has_bnb:
        for mode in ("int8", "nf4"):
            need_q = weight_bytes(counts, mode) + ACTIVATION_RESERVE
            if free >= need_q:
                return mode, f"{gib(free)} free: bf16 needs {gib(need)}, {mode} about {gib(need_q)}"
    return "offload", f"{gib(free)} free is too little to hold the weights; decoder layers stream from CPU memory"


def is_quant_target(name: str) -> bool:
    """Linear layers that the quantised modes replace: everything inside the language model."""
    return name.startswith("language_model.")


def _quantized_linear(weight: torch.Tensor, bias: torch.Tensor | None, mode: str, dtype: torch.dtype) -> nn.Module:
    import bitsandbytes as bnb

    out_f, in_f = weight.shape
    if mode == "nf4":
        layer = bnb.nn.Linear4bit(
            in_f, out_f, bias=bias is not None, compute_dtype=dtype, quant_type="nf4", device="meta"
        )
        layer.weight = bnb.nn.Params4bit(weight.to(dtype), requires_grad=False, quant_type="nf4")
    else:
        layer = bnb.nn.Linear8bitLt(
            in_f, out_f, bias=bias is not None, has_fp16_weights=False, threshold=6.0, device="meta"
        )
        layer.weight = bnb.nn.Int8Params(weight.to(dtype), requires_grad=False, has_fp16_weights=False)
    if bias is not None:
        layer.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
    return layer


def quantize_into(
    model: nn.Module,
    read: Callable[[str], torch.Tensor],
    mode: str,
    device: torch.device,
    dtype: torch.dtype,
) -> set[str]:
    """Replace every target linear of a meta-device model by a bitsandbytes layer filled from ``read(key)``.

    Layers are read, quantised (on the move to ``device``) and placed one at a time, so memory never holds the
    whole bf16 model. Returns the state-dict keys consumed.
    """
    if not bitsandbytes_available():
        raise MissingDependencyError("bitsandbytes", "quant", f"--mode {mode}")
    consumed: set[str] = set()
    for name, module in list(model.named_modules()):
        if not (isinstance(module, nn.Linear) and is_quant_target(name)):
            continue
        bias = read(f"{name}.bias") if module.bias is not None else None
        layer = _quantized_linear(read(f"{name}.weight"), bias, mode, dtype).to(device)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer)
        consumed.add(f"{name}.weight")
        if bias is not None:
            consumed.add(f"{name}.bias")
    return consumed


def device_map_for(
    model: nn.Module,
    mode: str,
    info: DeviceInfo,
    max_gpu_memory: str | None,
    dtype: torch.dtype,
    max_cpu_memory: str | None = None,
) -> dict[str, str | int]:
    """An accelerate device map: decoder layers spread under the budgets; what fits nowhere goes to disk.

    Without a GPU (offload on the CPU, for tests) the map holds only ``cpu`` and ``disk``.
    """
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_max_memory

    cpu_budget = max_cpu_memory or get_max_memory().get("cpu", 0)
    if mode == "multi-gpu":  # GPU 0 also holds the autoencoder, the latents and the KV caches
        max_memory = {
            g.index: f"{max(1, (g.free - (ACTIVATION_RESERVE if g.index == 0 else GiB)) // GiB)}GiB" for g in info.gpus
        }
        max_memory["cpu"] = 0
    elif info.cuda:
        total = _bytes(max_gpu_memory) if max_gpu_memory else info.gpus[0].free
        max_memory = {0: weights_budget(total, max_gpu_memory is not None), "cpu": cpu_budget}
    else:
        max_memory = {"cpu": cpu_budget}
    device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=NO_SPLIT, dtype=dtype)
    # lm_head only serves text decoding: keep it off the GPU budget when offloading
    if mode == "offload" and "language_model.lm_head" in device_map:
        device_map["language_model.lm_head"] = "cpu"
    return device_map


def weights_budget(total: int, asked: bool = True) -> int:
    """GPU bytes the offloaded weights may take: ``--max-gpu-memory`` is the whole budget, so the activations and
    KV caches of a large request (ACTIVATION_RESERVE) come off it first; docs/PERF.md gives the peak measured at 7B."""
    left = total - ACTIVATION_RESERVE
    if left < GiB:
        if asked:
            log.warning(
                "a GPU budget of %.1f GiB leaves no room for weights once the %d GiB of activations and KV caches "
                "of a 1024 px request are set aside: every decoder layer streams from CPU memory at each step",
                total / GiB, ACTIVATION_RESERVE // GiB,
            )  # fmt: skip
        return 0
    return left


def _bytes(size: str) -> int:
    from accelerate.utils import convert_file_size_to_int

    return convert_file_size_to_int(size)


def _device_of(key: str, device_map: dict[str, str | int]) -> str | int:
    """The device-map entry that owns a parameter key (the longest matching module prefix)."""
    best, owner = -1, "cpu"
    for prefix, dev in device_map.items():
        if (prefix == "" or key == prefix or key.startswith(prefix + ".")) and len(prefix) > best:
            best, owner = len(prefix), dev
    return owner


def dispatch(
    model: nn.Module,
    read: Callable[[str], torch.Tensor],
    keys: list[str],
    device_map: dict[str, str | int],
    main_device: torch.device,
    offload_dir: str | None,
) -> nn.Module:
    """Fill a meta-device model along ``device_map`` (tensor by tensor) and attach accelerate's moving hooks.

    Tensors mapped to a GPU or to ``cpu`` are placed there; tensors mapped to ``disk`` are written to
    ``offload_dir`` as memory-mapped files that the hooks read when their layer runs.
    """
    from accelerate import dispatch_model
    from accelerate.utils import offload_state_dict, set_module_tensor_to_device

    on_disk: dict[str, torch.Tensor] = {}
    for key in keys:
        dev = _device_of(key, device_map)
        if dev == "disk":
            on_disk[key] = read(key)
        else:
            set_module_tensor_to_device(model, key, dev, value=read(key))
    if on_disk:
        if offload_dir is None:
            raise UnsupportedModeError("The GPU and CPU budgets leave layers for disk: pass --offload-dir DIR")
        offload_state_dict(offload_dir, on_disk)
        log.info("offloaded %d tensors to %s", len(on_disk), offload_dir)
    return dispatch_model(model, device_map=device_map, main_device=main_device, offload_dir=offload_dir)
