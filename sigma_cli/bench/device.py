"""``sigma bench --suite device``: the one script to run when a GPU is lent, each part with a hard timeout.

Parts, each in its own process (a hang or a crash costs that part only) and each writing JSON as it goes, in
order of value (``DEFAULT_PARTS``, 8 minutes at most):

1. ``cases``: case (a) text-to-image and case (b) SIGMA three references, bf16, exact and with each speed-up:
   graphs with compiled layer regions (first image cold, compilation included, then warm), ``--speed fast``
   alone and with them, and the velocity forecast (``forecast_every`` 3) with them (:mod:`.speedups`);
2. ``profile``: ``torch.profiler`` over two steps of (b): top kernels, shares of attention, linear layers, norms,
   routing copies and launch gaps, a Chrome trace; then the step time with 1, 2 and 3 guidance branches;
3. ``fp8``: ``--mode fp8`` against bf16 (mid model and the full shape) and its case timings;
4. ``throughput``: 1, 2, 4 requests generated together against apart (mid model);
5. ``gpu-tests``: the ``gpu``-marked tests.

Also available (``--parts``), each measured once and unchanged since: ``compile-cache`` (a new process's
compilation with inductor's disk cache filled by ``cases``; 2026-12-04), ``bf16`` (against float32), ``quant``
(nf4/int8 against bf16), ``memory`` (nf4 and offload peaks), ``attention`` (each SDPA backend; 2026-11-30).

``--scale full`` is the 7B configuration at 1024 px and 50 steps (a GPU); ``--scale toy`` runs the same code paths
on the tiny model at 128 px and 6 steps, so the script itself is tested on any CPU.
"""

from __future__ import annotations

import copy
import functools
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from sigma_studio.model.config import GenerationConfig
from sigma_studio.model.files import write_json
from sigma_studio.model.presets import PRESETS
from sigma_studio.model.request.build import build_request

from . import speedups
from .cases import PROMPT_MID, SCALES, bench_device, run_case, two_references
from .equivalence import relative_error
from .weights import build_pipeline, mid

DEFAULT_PARTS = ("cases", "profile", "fp8", "throughput", "gpu-tests")  # the headline first
PARTS = (*DEFAULT_PARTS, "compile-cache", "bf16", "quant", "memory", "attention")
# seconds: the default parts take 8 min at most, so that a 15-minute lease holds the machine's start and one run
TIMEOUTS = {"cases": 240, "profile": 40, "fp8": 125, "throughput": 30, "gpu-tests": 45, "compile-cache": 35,
            "bf16": 45, "quant": 60, "memory": 150, "attention": 40}  # fmt: skip
# the toy run checks the code paths on any CPU, a loaded CI machine too: its timeouts are the GPU's times this
TOY_SLACK = 5
# (name, query rows, key rows): the 7B attention calls of case (a) and (b) at 1024 px, and the VAE's mid-block
ATTENTION_SHAPES = (("query a", 4098, 4193, 28, 4, 128), ("query b", 4098, 16468, 28, 4, 128),
                    ("prefill b", 12370, 12370, 28, 4, 128), ("vae 1024", 16384, 16384, 1, 1, 512))  # fmt: skip
MEMORY_STEPS = 4  # peak memory needs few steps; their timing is reported but not the figure sought
PART_MODULE = "sigma_studio.cli.bench.device"  # run as python -m PART_MODULE PART OUT.json SCALE


def device_suite(out_dir: Path, scale: str, parts: tuple[str, ...] = DEFAULT_PARTS) -> dict:
    """Run each part in a subprocess with its timeout; collect the JSON each wrote, or why it did not.

    ``device.json`` is rewritten after every part, so a run cut short still leaves what it measured."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"scale": scale, "device": _device_name(), "torch": torch.__version__, "parts": {}}
    for part in parts:
        start = time.perf_counter()
        path = out_dir / f"{part}.json"
        cmd = [sys.executable, "-m", PART_MODULE, part, str(path), scale]
        limit = TIMEOUTS[part] * (1 if scale == "full" else TOY_SLACK)
        print(f"[device] {part}: up to {limit} s", flush=True)
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
            status = "ok" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-600:]}"
        except subprocess.TimeoutExpired:
            status = f"timed out after {limit} s"
        result, status = _read_part(path, status)
        seconds = round(time.perf_counter() - start, 1)
        report["parts"][part] = {"status": status, "seconds": seconds, "result": result}
        print(f"[device] {part}: {status} in {seconds} s", flush=True)
        write_json(out_dir / "device.json", report, default=str)
    return report


def _read_part(path: Path, status: str) -> tuple[dict | None, str]:
    """What a part measured (None when it wrote nothing, or nothing readable), and its status."""
    if not path.is_file():
        return None, status
    try:
        return json.loads(path.read_text()), status
    except (OSError, ValueError):
        return None, f"{status} (its report is unreadable)"


def _device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no CUDA device)"


def _gpu_tests(scale: str, save: Callable[[dict], None]) -> dict:
    repo = Path(__file__).resolve().parents[2]
    files = ["tests/test_gpu.py", "tests/test_accel.py", "tests/test_fp8.py"]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-m", "gpu", *files],
                          cwd=repo, capture_output=True, text=True)  # fmt: skip
    lines = done.stdout.strip().splitlines()
    printed = [x for x in lines if any(k in x for k in ("peak GPU", "relative error", "torchao", "FAILED", "Error"))]
    return {"returncode": done.returncode, "summary": lines[-1:], "printed": printed[:40]}


def _bf16(scale: str, save: Callable[[dict], None]) -> dict:
    dev, out = bench_device(), {}
    for name, arch in (("mid", mid()),):
        fp32 = build_pipeline(arch, "cpu", torch.device("cpu"), None)
        fp32.model, fp32._device = fp32.model.to(dev), dev
        fp32.vae = fp32.vae.to(dev)
        bf16 = copy.copy(fp32)
        bf16.model = copy.deepcopy(fp32.model).to(torch.bfloat16)
        request = build_request(PROMPT_MID, two_references(256), arch=arch, config=GenerationConfig(steps=6, seed=3))
        reference = fp32(request).latents
        out[name] = relative_error(bf16(request).latents, reference)
    return {"relative_error": out, "device": str(dev)}


def _quant(scale: str, save: Callable[[dict], None]) -> dict:
    dev, out = bench_device(), {}
    if dev.type != "cuda":
        return {"skipped": "bitsandbytes' 4/8-bit kernels are measured on CUDA; the CPU path is tested elsewhere"}
    arch = mid()
    ref = build_pipeline(arch, "bf16", dev, None)
    request = build_request(PROMPT_MID, two_references(256), arch=arch, config=GenerationConfig(steps=6, seed=3))
    base = ref(request).latents
    for mode in ("nf4", "int8"):
        torch.cuda.reset_peak_memory_stats(dev)
        pipe = build_pipeline(arch, mode, dev, None)
        out[mode] = {"relative_error_vs_bf16": relative_error(pipe(request).latents, base),
                     "peak_gib": torch.cuda.max_memory_allocated(dev) / 2**30}  # fmt: skip
    return out


def _memory(scale: str, save: Callable[[dict], None], modes: tuple[str, ...] = ("nf4", "offload")) -> dict:
    """Peak GPU memory of nf4, and of offload under a 10 GiB budget, at full scale (few steps: peak, not speed)."""
    preset, size, _ = SCALES[scale]
    dev = bench_device()
    arch = PRESETS[preset]().replace(vit=None)
    modes = modes if dev.type == "cuda" else ("offload",)
    out: dict = {"steps": MEMORY_STEPS, "budget": "10GiB", "results": {}}
    for mode in modes:
        t0 = time.perf_counter()
        try:
            pipe = build_pipeline(arch, mode, dev, "10GiB")
            out["results"][f"{mode}/build_seconds"] = time.perf_counter() - t0
            if dev.type == "cuda":  # the weights placed on the GPU, before any activation
                out["results"][f"{mode}/weights_gib"] = torch.cuda.memory_allocated(dev) / 2**30
            for case in ("a", "b"):
                out["results"][f"{mode}/{case}"] = asdict(run_case(pipe, case, size, MEMORY_STEPS, warmup=0))
                save(out)
        except Exception as exc:  # noqa: BLE001 - a mode that cannot run here is reported, not fatal
            out["results"][mode] = f"{type(exc).__name__}: {exc}"[:400]
        pipe = None
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        save(out)
    return out


def _attention(scale: str, save: Callable[[dict], None]) -> dict:
    """Milliseconds per SDPA call of each backend on the shapes the 7B model runs (GQA as the model calls it)."""
    dev = bench_device()
    if dev.type != "cuda":
        return {"skipped": "the attention backends are timed on CUDA"}
    out: dict = {}
    for name, lq, lk, hq, hkv, d in ATTENTION_SHAPES:
        q = torch.randn(1, hq, lq, d, device=dev, dtype=torch.bfloat16)
        k, v = (torch.randn(1, hkv, lk, d, device=dev, dtype=torch.bfloat16) for _ in range(2))
        for backend in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", None):
            out[f"{name}/{backend or 'default'}"] = _time_sdpa(q, k, v, backend)
        save(out)
    return out


def _time_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str | None) -> float | str:
    """Milliseconds per call with one backend forced (None: PyTorch's own choice), or why none ran."""
    every = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    try:
        with sdpa_kernel([getattr(SDPBackend, backend)] if backend else every):
            for i in range(11):  # one warm-up call, then ten timed
                if i == 1:
                    torch.cuda.synchronize(q.device)
                    t0 = time.perf_counter()
                F.scaled_dot_product_attention(q, k, v, enable_gqa=k.shape[1] != q.shape[1])
            torch.cuda.synchronize(q.device)
        return round((time.perf_counter() - t0) * 100, 3)
    except RuntimeError as exc:
        return str(exc).splitlines()[0][:80]


RUNNERS = {
    "cases": speedups.cases,
    "profile": speedups.profile,
    "fp8": speedups.fp8,
    "throughput": speedups.throughput,
    "gpu-tests": _gpu_tests,
    "compile-cache": speedups.compile_cache,
    "bf16": _bf16,
    "quant": _quant,
    "memory": _memory,
    "attention": _attention,
}


def run_part(part: str, path: Path, scale: str) -> None:
    """One part, its JSON rewritten as it measures: a part cut short by its timeout still reports."""

    def save(result: dict) -> None:  # atomically: a part killed mid-write leaves its previous report whole
        write_json(path, result, default=str)

    runner = RUNNERS[part]
    if part == "profile":  # its Chrome trace goes beside the JSON
        runner = functools.partial(speedups.profile, trace_dir=path.parent)
    save(runner(scale, save))


if __name__ == "__main__":  # python -m sigma_studio.cli.bench.device PART OUT.json SCALE
    run_part(sys.argv[1], Path(sys.argv[2]), sys.argv[3])
