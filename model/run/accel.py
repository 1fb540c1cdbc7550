"""Opt-in execution speed-ups of the denoising step that compute the same function: CUDA graphs and compilation.

* ``graphs``: each set of guidance branches' velocity query is captured once as a CUDA graph and replayed at
  every later step (:mod:`model.run.graphs`). CUDA only.
* ``compile``: regional compilation. The work of a decoder layer around attention (norms, projections, q/k norm,
  RoPE; output projection, residual, MLP) is two free functions of the layer, compiled once by
  ``torch.compile`` with the layer's weights as inputs, so one graph serves all 28 layers and the first image
  pays one compilation, not 28. Attention and its KV cache stay eager. Only the denoising steps use them: the
  prefill's lengths differ per context and would recompile. Inductor's caches are kept on disk under
  ``$XDG_CACHE_HOME/sigma-studio/inductor`` (unless ``TORCHINDUCTOR_CACHE_DIR`` is set), so a second process
  reuses the compiled kernels instead of compiling again.

``--accel auto`` takes :data:`AUTO_CUDA` on a CUDA device and nothing elsewhere; a command that makes a single image
takes :data:`SINGLE_IMAGE_AUTO` instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..arch.qwen2_mot import Regions, layer_finish, layer_qkv
from ..errors import InputError

# "autotune": compile with inductor's max-autotune-no-cudagraphs (GEMM and kernel autotuning; minutes of compiling
# at 7B, unmeasured: docs/PERF.md) instead of its default mode
ACCELS: tuple[str, ...] = ("graphs", "compile", "autotune")
# the fastest exact combination measured on a GPU (docs/PERF.md, H200): warm images 1.21x (a) and 1.15x (b)
AUTO_CUDA = "graphs,compile"
# a process that makes one image (``sigma generate``): compiling costs more than it saves the first time (18 s
# for case (a) on the H200, about 3 s with inductor's disk cache warm, against 2 s and 3 s saved), so none
SINGLE_IMAGE_AUTO = "none"
COMPILE_MODES: tuple[str, ...] = ("default", "max-autotune-no-cudagraphs")
AUTO_MODES = ("bf16", "fp8", "tiny")  # where auto turns them on (quantised kernels are not measured captured)
NOT_WITH_MODES = ("offload", "multi-gpu")  # hooks move weights per layer: neither graphs nor compiled regions


@dataclass(frozen=True)
class Acceleration:
    """Which speed-ups the denoising step uses; the default is none (the plain eager path)."""

    graphs: bool = False
    compile: bool = False
    compile_mode: str = COMPILE_MODES[0]

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise InputError(f"compile mode {self.compile_mode!r} is not one of {', '.join(COMPILE_MODES)}")

    @property
    def label(self) -> str:
        names = ["graphs"] * self.graphs + ["autotune" if self.compile_mode != "default" else "compile"] * self.compile
        return ",".join(names) or "none"


def parse_accel(text: str | None, device_type: str, mode: str = "bf16") -> Acceleration:
    """``--accel``: ``none``, ``auto`` (:data:`AUTO_CUDA` on CUDA in the modes of :data:`AUTO_MODES`, else none)
    or a comma list of :data:`ACCELS`."""
    text = (text or "auto").strip().lower()
    if text == "auto":
        text = AUTO_CUDA if device_type == "cuda" and mode in AUTO_MODES else "none"
    if text == "none":
        return Acceleration()
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ACCELS]
    if unknown or not names:
        raise InputError(f"--accel {text!r}: write none, auto or a comma list of {', '.join(ACCELS)}")
    autotune = "autotune" in names
    return Acceleration(graphs="graphs" in names, compile="compile" in names or autotune,
                        compile_mode=COMPILE_MODES[1] if autotune else COMPILE_MODES[0])  # fmt: skip


def check_accel(acc: Acceleration, device_type: str, mode: str) -> None:
    """Refuse a combination this device or loading mode cannot run, naming what to change."""
    if acc.graphs and device_type != "cuda":
        raise InputError("--accel graphs needs a CUDA device: drop it, or use --accel auto")
    if (acc.graphs or acc.compile) and mode in NOT_WITH_MODES:
        raise InputError(f"--accel {acc.label} does not work with --mode {mode} (its hooks move weights per layer)")


def inductor_cache_dir() -> Path:
    """Where compiled kernels are kept across runs (``TORCHINDUCTOR_CACHE_DIR`` when set)."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "sigma-studio" / "inductor"


def compiled_regions(mode: str = COMPILE_MODES[0]) -> Regions:
    """The two layer regions compiled by inductor (compilation itself happens on their first call)."""
    import torch

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(inductor_cache_dir()))
    opts = {} if mode == "default" else {"mode": mode}
    return Regions(torch.compile(layer_qkv, dynamic=False, **opts), torch.compile(layer_finish, dynamic=False, **opts))
