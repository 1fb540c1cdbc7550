"""``sigma bench`` (``--suite modes``, the default): both cases in every loading mode at a preset's scale, with
random weights (the same FLOPs as the real ones), and the equivalence check per mode; writes ``bench.json``.

    sigma bench                       # on a GPU: 7B, every mode, both cases, table + bench.json
    sigma bench --preset tiny --device cpu --steps 4 --size 128      # the same code at toy scale on the CPU
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from sigma_studio.model.files import write_json
from sigma_studio.model.presets import PRESETS

from .cases import run_case
from .equivalence import equivalence
from .flops import matmul_rate
from .weights import build_pipeline


def benchmark(
    preset: str, modes: list[str], device: str, size: int, steps: int, out: Path, max_gpu_memory: str | None
) -> dict:
    """Run both cases in each mode (a mode that cannot run here is reported under ``errors``); write ``out``."""
    arch = PRESETS[preset]().replace(vit=None)  # generation only: the ViT does not run in either case
    dev = torch.device(device)
    results, errors, equiv = [], {}, {}
    for mode in modes:
        try:
            pipe = build_pipeline(arch, mode, dev, max_gpu_memory)
            for case in ("a", "b"):
                results.append(run_case(pipe, case, size, steps, warmup=3))
            equiv[mode] = equivalence(pipe, size, min(steps, 4))
        except Exception as exc:  # noqa: BLE001 - a mode that cannot run here is reported, not fatal
            errors[mode] = f"{type(exc).__name__}: {exc}"
        finally:
            pipe = None
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    report = {
        "device": device_name,
        "preset": preset,
        "size": size,
        "steps": steps,
        "matmul_tflops": matmul_rate(dev) / 1e12,
        "results": [asdict(r) for r in results],
        "equivalence_rel_error": equiv,
        "errors": errors,
    }
    write_json(out, report)
    return report
