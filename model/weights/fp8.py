"""``--mode fp8``: the decoder's linear layers in FP8 on Ada and Hopper GPUs, through torchao.

torchao's float8 dynamic quantisation (``Float8DynamicActivationFloat8WeightConfig`` with per-row scales): each
weight is stored once in float8 e4m3 with one scale per output row; each activation is quantised per row at
run time, and the product runs on the FP8 tensor cores (``torch._scaled_mm``), accumulating in float32. Only the
decoder layers' linear layers change (both experts' q/k/v/o projections and MLPs: nearly all the FLOPs);
embeddings, norms, the latent glue layers, the attention and the autoencoder stay in bf16 / float32.

This is an approximation, not the same function: its error against bf16 is measured (docs/PERF.md) and bounded
by ``tests/test_fp8.py``, which emulates the same rounding on the CPU.
"""

from __future__ import annotations

import importlib.util

import torch

from ..errors import MissingDependencyError, UnsupportedModeError

AMAX_FLOOR = 1e-12  # the smallest activation amax a scale is computed from (the CPU emulation uses the same)
MIN_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (8.9) and Hopper (9.0) and later


def fp8_available() -> bool:
    return importlib.util.find_spec("torchao") is not None


def check_fp8_device(device: torch.device) -> None:
    """Refuse a device without FP8 tensor cores, naming it and what to use instead."""
    if device.type != "cuda":
        raise UnsupportedModeError("--mode fp8 runs on a CUDA GPU with FP8 tensor cores; use --mode cpu here")
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        raise UnsupportedModeError(
            f"--mode fp8 needs FP8 tensor cores (compute capability 8.9+: Ada, Hopper); {name} has "
            f"{capability[0]}.{capability[1]}: use --mode bf16 or --mode int8"
        )


def quantize_fp8_(model: torch.nn.Module) -> int:
    """Replace the decoder layers' linear weights with torchao float8 tensors, in place; returns how many."""
    if not fp8_available():
        raise MissingDependencyError("torchao", "fp8", "--mode fp8")
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    layers = model.language_model.model.layers
    count = sum(isinstance(m, torch.nn.Linear) for m in layers.modules())
    # a row of zeros (the zero-input ViT slots of the trained layout) has scale 0 and would give 0/0 = NaN:
    # torchao clamps the activation amax only when given a lower bound
    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), activation_value_lb=AMAX_FLOOR)
    quantize_(layers, config)
    return count
