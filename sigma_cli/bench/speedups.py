"""The device check's parts for the speed-ups of issue 25: the headline cases with each combination of CUDA
graphs, compilation and ``--speed fast``; a profile of two steps of case (b); per-branch step time (what
guidance-parallel GPUs would save); FP8; throughput of batched requests; and a new process's compile time with
inductor's cache warm. Each is a function ``(scale, save) -> dict`` run by :mod:`.device` in its own process."""

from __future__ import annotations

import gzip
import shutil
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from sigma_studio.model.config import SPEEDS
from sigma_studio.model.presets import PRESETS
from sigma_studio.model.request.build import build_request
from sigma_studio.model.run.accel import Acceleration
from sigma_studio.model.run.graphs import StepRunner

from .cases import SCALES, bench_device, case_inputs, run_case
from .equivalence import equivalence, relative_error
from .flops import sync
from .throughput import throughput_suite
from .weights import build_pipeline, mid

FAST = SPEEDS["fast"]
FORECAST = 3  # forecast_every of the shapes table's best setting (docs/PERF.md)
# kernel name fragments -> where the time goes (first match wins; names are lower-cased)
KERNEL_KINDS = (  # CUDA kernel names, and the CPU ops of a CPU profile
    ("attention", ("fmha", "flash", "attention", "sdpa", "cudnn", "scaled_dot_product")),
    ("linear layers", ("gemm", "nvjet", "cutlass", "xmma", "wgmma", "scaled_mm", "cublas", "s16816", "addmm",
                       "aten::mm", "aten::linear")),
    ("compiled (fused)", ("triton", "cpp_fused", "compiledfunction")),
    ("norms", ("rms", "norm", "reduce_kernel", "rsqrt", "pow_", "aten::pow", "aten::mean")),
    ("expert routing and copies", ("cat", "index", "gather", "scatter", "copy", "aten::to")),
)  # fmt: skip


def _full_pipe(scale: str, mode: str | None = None):
    preset, size, steps = SCALES[scale]
    dev = bench_device()
    mode = mode or ("bf16" if dev.type == "cuda" else "cpu")
    arch = PRESETS[preset]().replace(vit=None)  # generation only: the ViT does not run in either case
    return build_pipeline(arch, mode, dev, None), size, steps


def _combos(dev: torch.device) -> list[tuple[str, Acceleration, int, int, bool]]:
    """(name, acceleration, guidance_every, forecast_every, cold): the exact baseline and ``--speed fast`` first
    (eager, nothing to go wrong), then the compiled path cold (compilation included) and warm, then ``--speed
    fast`` and the velocity forecast with it."""
    graphs = dev.type == "cuda"
    best = Acceleration(graphs=graphs, compile=True)
    # graphs alone (no compile) gained nothing on the H200 (1.00x, 2026-12-04): not rerun by default
    combos = [("exact", Acceleration(), 1, 1, False), ("fast", Acceleration(), FAST, 1, False)]
    label = best.label
    combos += [
        (f"{label} (cold)", best, 1, 1, True),
        (label, best, 1, 1, False),
        (f"fast+{label}", best, FAST, 1, False),
        (f"forecast{FORECAST}+{label}", best, 1, FORECAST, False),
    ]
    return combos


def cases(scale: str, save: Callable[[dict], None]) -> dict:
    """Case (a) and (b) under every combination; the compiled path's first image shows its compile time."""
    t0 = time.perf_counter()
    pipe, size, steps = _full_pipe(scale)
    out: dict = {"size": size, "steps": steps, "mode": pipe.mode, "build_seconds": time.perf_counter() - t0,
                 "results": {}}  # fmt: skip
    for name, acc, every, forecast, cold in _combos(pipe.device):
        pipe.accelerate(acc)
        for case in ("a", "b"):
            try:
                result = run_case(pipe, case, size, steps, warmup=0 if cold else 2, every=every, forecast=forecast)
                out["results"][f"{name}/{case}"] = asdict(result)
            except Exception as exc:  # noqa: BLE001 - a combination this build cannot run is reported, not fatal
                out["results"][f"{name}/{case}"] = f"{type(exc).__name__}: {exc}"[:400]
            save(out)
    pipe.accelerate(Acceleration())
    out["batched_vs_plain_rel_error"] = equivalence(pipe, size, 3)
    return out


def _kind(kernel: str) -> str:
    name = kernel.lower()
    return next((kind for kind, parts in KERNEL_KINDS if any(p in name for p in parts)), "other elementwise")


def _prefilled_b(pipe, size: int):
    """Case (b)'s three prefilled contexts (two steps generated to get them)."""
    kw, cfg = case_inputs("b", size, 2)
    request = build_request(**kw, arch=pipe.arch, config=cfg)
    result = pipe._generate(request, keep_contexts=True)
    contexts = list({id(c): c for c in result.contexts.values()}.values())
    grid = (size // pipe.arch.pixels_per_token, size // pipe.arch.pixels_per_token)
    return contexts, grid


def _time_runner(run: StepRunner, contexts, x, t, repeats: int) -> float:
    run(contexts, x, t)  # warm-up
    times = []
    for _ in range(repeats):
        sync(x.device)
        start = time.perf_counter()
        run(contexts, x, t)
        sync(x.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def profile(scale: str, save: Callable[[dict], None], trace_dir: Path | None = None) -> dict:
    """``torch.profiler`` over two denoising steps of case (b) (eager, exact): the top 15 kernels, the share of
    each kind of work and of launch gaps, a Chrome trace; then the step time with 1, 2 and 3 branches."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    pipe, size, _ = _full_pipe(scale)
    contexts, grid = _prefilled_b(pipe, size)
    run = StepRunner(pipe.model, grid, pipe.tokenizer.ids, pipe.device)
    x = torch.randn(grid[0] * grid[1], pipe.arch.patch_latent_dim, device=pipe.device)
    t = torch.tensor(0.5, device=pipe.device)
    run(contexts, x, t)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if pipe.device.type == "cuda" else [])
    sync(pipe.device)
    start = time.perf_counter()
    with torch_profile(activities=activities) as prof:
        for _ in range(2):
            run(contexts, x, t)
        sync(pipe.device)
    wall = time.perf_counter() - start
    out: dict = {"wall_seconds_two_steps": wall, **_kernel_shares(prof, wall, pipe.device.type == "cuda")}
    if trace_dir is not None:
        raw = trace_dir / "profile-trace.json"
        prof.export_chrome_trace(str(raw))
        with raw.open("rb") as src, gzip.open(trace_dir / "profile-trace.json.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        raw.unlink()
        out["trace"] = "profile-trace.json.gz (chrome://tracing or ui.perfetto.dev)"
    save(out)
    out["branches"] = {str(k): _time_runner(run, contexts[:k], x, t, 5) for k in (1, 2, 3)}
    one, three = out["branches"]["1"], out["branches"]["3"]
    out["guidance_parallel_expected_speedup"] = {"3 GPUs": three / one, "2 GPUs": three / out["branches"]["2"]}
    out["per_branch_note"] = f"a 3-branch step {three * 1e3:.0f} ms, a 1-branch step {one * 1e3:.0f} ms"
    return out


def _kernel_shares(prof, wall: float, cuda: bool) -> dict:
    """Top kernels and the share of the wall time per kind; the rest of the wall time is launch gaps."""
    rows = []
    for event in prof.key_averages():
        t = (event.self_device_time_total if cuda else event.self_cpu_time_total) / 1e6  # seconds
        if t > 0 and (not cuda or event.device_type == torch.autograd.DeviceType.CUDA):
            rows.append((event.key, t, event.count))
    rows.sort(key=lambda r: -r[1])
    busy = sum(t for _, t, _ in rows)
    kinds: dict[str, float] = defaultdict(float)
    for name, t, _ in rows:
        kinds[_kind(name)] += t
    shares = {kind: t / wall for kind, t in sorted(kinds.items(), key=lambda kv: -kv[1])}
    if cuda:
        shares["launch gaps (device idle)"] = max(0.0, 1 - busy / wall)
    top = [{"kernel": n[:120], "seconds": t, "calls": c, "share": t / wall} for n, t, c in rows[:15]]
    return {"top_kernels": top, "shares": shares, "busy_seconds": busy}


def fp8(scale: str, save: Callable[[dict], None]) -> dict:
    """FP8 against bf16: the mid model's and the full shape's relative latent error, then case (a)/(b) timed."""
    dev = bench_device()
    if dev.type != "cuda" or torch.cuda.get_device_capability(dev) < (8, 9):
        return {"skipped": "--mode fp8 needs FP8 tensor cores (compute capability 8.9+)"}
    from sigma_studio.model import GenerationConfig
    from sigma_studio.model.weights.fp8 import quantize_fp8_

    from .cases import PROMPT_MID, two_references

    out: dict = {}
    pipe = build_pipeline(mid(), "bf16", dev, None)
    request = build_request(PROMPT_MID, two_references(256), arch=pipe.arch, config=GenerationConfig(steps=6, seed=3))
    ref = pipe(request).latents
    quantize_fp8_(pipe.model)
    out["mid_rel_error_vs_bf16"] = relative_error(pipe(request).latents, ref)
    save(out)
    pipe, size, steps = _full_pipe(scale)
    kw, cfg = case_inputs("b", size, 6)
    request = build_request(**kw, arch=pipe.arch, config=cfg)
    ref = pipe(request).latents
    quantize_fp8_(pipe.model)
    pipe.mode = "fp8"
    out["full_rel_error_vs_bf16_case_b_6_steps"] = relative_error(pipe(request).latents, ref)
    save(out)
    graphs = dev.type == "cuda"
    best = Acceleration(graphs=graphs, compile=True)
    runs = [("fp8+graphs", Acceleration(graphs=graphs), False), (f"fp8+{best.label} (cold)", best, True),
            (f"fp8+{best.label}", best, False)]  # fmt: skip
    for name, acc, cold in runs:
        pipe.accelerate(acc)
        for case in ("b", "a"):
            try:  # torchao's kernels might refuse capture or compilation: reported, then the next run
                out[f"{name}/{case}"] = asdict(run_case(pipe, case, size, steps, warmup=0 if cold else 2))
            except Exception as exc:  # noqa: BLE001
                out[f"{name}/{case}"] = f"{type(exc).__name__}: {exc}"[:400]
            save(out)
    return out


def throughput(scale: str, save: Callable[[dict], None]) -> dict:
    """Images per minute of 1, 2 and 4 requests together against apart, on the mid model (512 px on a GPU)."""
    dev = bench_device()
    pipe = build_pipeline(mid(), "bf16" if dev.type == "cuda" else "cpu", dev, None)
    size, steps = (512, 20) if dev.type == "cuda" else (128, 4)
    rows = throughput_suite(pipe, size=size, steps=steps)
    return {"size": size, "steps": steps, "rows": [asdict(r) for r in rows]}


def compile_cache(scale: str, save: Callable[[dict], None]) -> dict:
    """A new process compiling with inductor's cache already filled by the ``cases`` part: the first image's extra
    time over a warm one (case (a), few steps)."""
    pipe, size, _ = _full_pipe(scale)
    pipe.accelerate(Acceleration(graphs=pipe.device.type == "cuda", compile=True))
    first = run_case(pipe, "a", size, 6, warmup=0)
    warm = run_case(pipe, "a", size, 6, warmup=0)
    return {"first_seconds": first.seconds, "warm_seconds": warm.seconds, "steps": 6,
            "compile_seconds_with_cache": first.seconds - warm.seconds}  # fmt: skip
