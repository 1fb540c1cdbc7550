"""The speed and memory benchmark at full BAGEL-7B-MoT scale with random weights (same FLOPs as the real ones).

    sigma bench                       # on a GPU: 7B, every mode, both cases, table + bench.json
    sigma bench --preset tiny --device cpu --steps 4 --size 128      # the same code at toy scale on the CPU

Cases (spec: PERF_NOTES.md):
  (a) text-to-image 1024x1024, 50 steps, text guidance 4.0 on (0.4, 1]
  (b) SIGMA compositional: three 1024x1024 references interleaved with text, 50 steps, text 4.0 + image 2.0
      guidance on (0, 1], renorm text_channel, released layout (three real guidance contexts)
For each: seconds per image and per denoising step, peak GPU memory, FLOPs counted for the run, and the fraction
of the hardware limit (FLOPs / measured dense matmul rate of the same device).
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import torch
import typer
from PIL import Image
from rich.table import Table

from sigma_studio.model.arch.autoencoder import AutoEncoder
from sigma_studio.model.config import PRESETS, ArchConfig, GenerationConfig
from sigma_studio.model.loader import build_model, materialize
from sigma_studio.model.modes import QUANT_MODES, device_map_for, probe
from sigma_studio.model.pipeline import SigmaPipeline
from sigma_studio.model.request import build_request
from sigma_studio.model.tokens import Tokenizer

from . import render
from .options import GpuMemOpt

PROMPT_A = "A photorealistic red fox sitting in fresh snow at sunrise, soft light, shallow depth of field"
TEXTS_B = ["Place <id>the man", "next to <subject>the dog", "in the style of <style>this painting", "at dusk."]


@dataclass
class CaseResult:
    mode: str
    case: str
    seconds: float
    seconds_per_step: float
    outside_loop_seconds: float  # prefill, VAE encode and decode, image conversion
    peak_gib: float
    tflop: float
    fraction_of_peak: float
    context_tokens: list[int]


def random_reader(model, seed: int = 0, std: float = 0.02, device: torch.device | None = None):
    """read(key) -> a random tensor of that parameter's shape (norm weights 1, the sin-cos tables computed).

    On a GPU the numbers are drawn there (a 7B model's 14 B values take seconds, not the minutes of a CPU); the
    values differ from the CPU's but are as repeatable."""
    device = device or torch.device("cpu")
    from sigma_studio.model.arch.layers import sincos_table_2d

    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}

    def read(key: str) -> torch.Tensor:
        shape = shapes[key]
        if key.endswith("pos_embed"):
            return sincos_table_2d(int(shape[0] ** 0.5), shape[1]).to(device)
        if "norm" in key and key.endswith("weight"):
            return torch.ones(shape, device=device)
        g = torch.Generator(device).manual_seed(zlib.crc32(f"{seed}/{key}".encode()))  # same weights every run
        return torch.randn(shape, generator=g, device=device) * std

    return read, list(shapes)


def build_pipeline(arch: ArchConfig, mode: str, device: torch.device, max_gpu_memory: str | None) -> SigmaPipeline:
    dtype = torch.float32 if device.type == "cpu" and mode not in QUANT_MODES else torch.bfloat16
    meta = build_model(arch, "meta", dtype)
    read, keys = random_reader(meta, device=device if device.type == "cuda" else None)
    # quantising and offloading take their tensors from the CPU, as from a checkpoint file
    home = device if mode not in QUANT_MODES + ("offload", "multi-gpu") else torch.device("cpu")
    cast = lambda k: read(k).to(dtype).to(home)  # noqa: E731
    if mode in ("offload", "multi-gpu"):
        device_map = device_map_for(meta, mode, probe(), max_gpu_memory, dtype)
        model = materialize(meta, cast, keys, device, dtype, "dispatch", device_map, "/tmp/sigma-bench-offload")
    else:
        model = materialize(meta, cast, keys, device, dtype, mode if mode in QUANT_MODES else "plain")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        vae = AutoEncoder(arch.vae).to(device).eval().requires_grad_(False)
    return SigmaPipeline(model, vae, Tokenizer.byte_level(), name="bench", device=device, mode=mode)


def matmul_rate(device: torch.device) -> float:
    """Measured dense matmul FLOP/s of the device (bf16 on GPUs, float32 on the CPU), median of several runs."""
    n = 8192 if device.type == "cuda" else 1024
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    times = []
    for _ in range(6):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        _sync(device)
        times.append((time.perf_counter() - t0) / 5)
    return 2 * n**3 / sorted(times)[len(times) // 2]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(arch: ArchConfig, n_latents: int, context_lengths: list[int]) -> float:
    """FLOPs of one denoising step: per branch, the generation expert over the latents, the understanding expert
    over the two markers, and attention of every query token against its context plus the query."""
    llm = arch.llm
    d, kv = llm.hidden_size, llm.num_kv_heads * llm.head_dim
    per_token = 2 * (d * d * 2 + 2 * d * kv + 3 * d * llm.intermediate_size)  # q,o + k,v + MLP, per layer
    q = n_latents + 2
    total = 0.0
    for ctx in context_lengths:
        total += llm.num_layers * (per_token * q + 4 * q * (ctx + q) * d)
        total += 2 * n_latents * d * arch.patch_latent_dim * 2  # vae2llm and llm2vae
    return total


def run_case(pipe: SigmaPipeline, case: str, size: int, steps: int, warmup: int, every: int = 1) -> CaseResult:
    """One timed generation of case ``a`` or ``b``, after ``warmup`` untimed steps (0: none); ``every`` > 1
    evaluates the guidance branches every that many steps (``--speed fast``)."""
    device = pipe.device
    arch = pipe.arch
    if case == "a":
        kw = dict(prompt=PROMPT_A, images=None)
        cfg = GenerationConfig(steps=steps, cfg_text_scale=4.0, cfg_img_scale=1.0, cfg_interval=(0.4, 1.0),
                               cfg_renorm_type="global", size=(size, size), seed=0, layout="released")  # fmt: skip
    else:
        refs = [Image.new("RGB", (size, size), c) for c in ("red", "green", "blue")]
        inputs = [TEXTS_B[0], refs[0], TEXTS_B[1], refs[1], TEXTS_B[2], refs[2], TEXTS_B[3]]
        kw = dict(inputs=inputs)
        cfg = GenerationConfig(
            steps=steps, cfg_text_scale=4.0, cfg_img_scale=2.0, cfg_interval=(0.0, 1.0),
            cfg_renorm_type="text_channel", size=(size, size), seed=0, layout="released",
        )  # fmt: skip
    cfg = cfg.replace(guidance_every=every)
    if warmup:
        pipe(**kw, config=cfg.replace(steps=warmup))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    marks: list[float] = []
    _sync(device)
    start = time.perf_counter()
    request = build_request(**kw, arch=arch, config=cfg)

    def mark(i: int, n: int) -> None:
        if i < n:  # denoising steps only: the last call comes after decoding
            _sync(device)
            marks.append(time.perf_counter())

    result = pipe._generate(request, progress=mark, keep_contexts=True)
    _sync(device)
    total = time.perf_counter() - start
    n_lat = (size // arch.pixels_per_token) ** 2
    unique = {id(c): c.plan.length for c in result.contexts.values()}
    active = _active_steps(cfg)
    flops = sum(
        step_flops(arch, n_lat, list(unique.values()) if on else [result.contexts["full"].plan.length]) for on in active
    )
    loop = marks[-1] - (marks[0] - (marks[1] - marks[0])) if len(marks) > 1 else total
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    rate = matmul_rate(device)
    return CaseResult(pipe.mode, case, total, loop / len(marks), total - loop, peak, flops / 1e12,
                      flops / loop / rate, sorted(unique.values(), reverse=True))  # fmt: skip


def _active_steps(cfg: GenerationConfig) -> list[bool]:
    """Per denoising step, whether the guidance branches run (sampler.GuidanceReuse's schedule)."""
    from sigma_studio.model.sampler import step_scales, timesteps

    out, age, have = [], 0, False
    for x in timesteps(cfg.steps, cfg.timestep_shift)[:-1]:
        if step_scales(x, cfg).text <= 1:  # only the full branch: nothing kept for later steps
            out.append(False)
            have, age = False, 1
        elif cfg.guidance_every > 1 and have and age < cfg.guidance_every:
            out.append(False)
            age += 1
        else:
            out.append(True)
            have, age = True, 1
    return out


def equivalence(pipe: SigmaPipeline, size: int, steps: int) -> float:
    """Relative error between the optimised (batched branches) and the plain path on one seed (case b)."""
    refs = [Image.new("RGB", (size, size), c) for c in ("red", "green", "blue")]
    inputs = [TEXTS_B[0], refs[0], TEXTS_B[1], refs[1], TEXTS_B[2], refs[2], TEXTS_B[3]]
    cfg = GenerationConfig(
        steps=steps, cfg_text_scale=4.0, cfg_img_scale=2.0, size=(size, size), seed=3, layout="released"
    )
    request = build_request(inputs=inputs, arch=pipe.arch, config=cfg)
    fast = pipe._generate(request).latents.float()
    plain = pipe._generate(request, batch_branches=False).latents.float()
    return float((fast - plain).norm() / plain.norm())


def benchmark(
    preset: str, modes: list[str], device: str, size: int, steps: int, out: Path, max_gpu_memory: str | None
) -> dict:
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
    out.write_text(json.dumps(report, indent=1))
    return report


def bench_command(
    preset: Annotated[str, typer.Option(help="bagel-7b-mot (full scale) | tiny")] = "bagel-7b-mot",
    modes: Annotated[str, typer.Option(help="comma-separated: bf16,nf4,int8,offload,cpu")] = "bf16,nf4,int8,offload",
    device: Annotated[str, typer.Option(help="cuda | cpu")] = "cuda",
    size: Annotated[int, typer.Option(help="output and reference side in pixels")] = 1024,
    steps: Annotated[int, typer.Option(help="denoising steps")] = 50,
    max_gpu_memory: GpuMemOpt = "8GiB",
    out: Annotated[Path, typer.Option(help="JSON report")] = Path("bench.json"),
    suite: Annotated[
        str,
        typer.Option(
            help="modes: every loading mode | layouts: the trained layout's cost | speed: fewer evaluations "
            "against quality | train-memory: peak memory per rank of a 2-process finetune, full against sharded "
            "load (these three on the CPU) | device: the GPU check (--preset tiny: its toy run)"
        ),
    ] = "modes",
) -> None:
    """Time text-to-image and SIGMA compositional generation in every mode (random weights, real FLOPs).

    [b]Examples[/]

      sigma bench --preset tiny --device cpu --modes cpu --size 128 --steps 6

      sigma bench --suite layouts --size 256 --steps 10     [dim]# the numbers in docs/PERF.md[/]

      sigma bench --suite device --out device/                [dim]# on a lent GPU: every check, ≤ 10 min[/]
    """
    if suite == "layouts":
        return _layouts(size, steps, out)
    if suite == "speed":
        return _speed(out)
    if suite == "train-memory":
        return _train_memory(out)
    if suite == "device":
        return _device_suite(out, "toy" if preset == "tiny" else "full")
    report = benchmark(preset, modes.split(","), device, size, steps, out, max_gpu_memory)
    table = Table(title=f"{report['preset']} on {report['device']} · {size}px · {steps} steps · "
                        f"matmul {report['matmul_tflops']:.1f} TFLOP/s")  # fmt: skip
    for col in ("mode", "case", "s / image", "s / step", "outside loop s", "peak GiB", "TFLOP", "of peak"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        table.add_row(r["mode"], r["case"], f"{r['seconds']:.2f}", f"{r['seconds_per_step']:.3f}",
                      f"{r['outside_loop_seconds']:.2f}", f"{r['peak_gib']:.1f}", f"{r['tflop']:.1f}",
                      f"{100 * r['fraction_of_peak']:.0f}%")  # fmt: skip
    render.stdout.print(table)
    for mode, err in report["equivalence_rel_error"].items():
        render.stdout.print(f"{mode}: batched vs plain branches, relative error of the final latents {err:.2e}")
    for mode, msg in report["errors"].items():
        render.console.print(f"[yellow]{mode} did not run:[/] {msg}")
    render.stdout.print(f"report: {out}")


def _layouts(size: int, steps: int, out: Path) -> None:
    import json

    from .bench_layouts import layout_suite

    report = layout_suite(size, steps)
    out.write_text(json.dumps(report, indent=1))
    table = Table(title=f"mid model ({report['params_m']:.0f} M parameters, no ViT) · 2 references · {size}px · "
                        f"{steps} steps · {report['threads']} threads")  # fmt: skip
    for col in ("layout", "prefill", "s / image", "prefill s", "s / step", "context tokens"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        table.add_row(r["layout"], r["prefill"], f"{r['seconds']:.2f}", f"{r['prefill_seconds']:.2f}",
                      f"{r['step_seconds']:.3f}", ", ".join(map(str, r["context_tokens"])))  # fmt: skip
    render.stdout.print(table)
    for name, ratio in report["ratios"].items():
        render.stdout.print(f"{name}: {ratio:.2f}x")
    render.stdout.print(f"report: {out}")


def _speed(out: Path) -> None:
    import json
    from dataclasses import asdict

    from .bench_speed import speed_suite

    rows = speed_suite()
    out.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    exact = rows[0]
    table = Table(title="guidance every N steps · shapes model, held-out rows · mid model, SIGMA case, 256 px")
    for col in ("N", "forwards / image", "fewer", "s / image", "faster", "accuracy", "Δ points", "PSNR vs exact",
                "mid s", "mid faster"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in rows:
        psnr = "exact" if r.psnr_vs_exact is None else f"{r.psnr_vs_exact:.1f} dB"
        fewer = exact.forwards_per_image / r.forwards_per_image
        table.add_row(str(r.every), f"{r.forwards_per_image:.1f}", f"{fewer:.2f}x",
                      f"{r.seconds_per_image:.3f}", f"{exact.seconds_per_image / r.seconds_per_image:.2f}x",
                      f"{r.accuracy:.1%}", f"{100 * (r.accuracy - exact.accuracy):+.1f}", psnr,
                      f"{r.mid_seconds:.2f}", f"{exact.mid_seconds / r.mid_seconds:.2f}x")  # fmt: skip
    render.stdout.print(table)
    for r in rows:
        render.stdout.print(f"N={r.every}: " + ", ".join(f"{k} {v:.0%}" for k, v in r.families.items()))
    render.stdout.print(f"report: {out}")


def _train_memory(out: Path) -> None:
    from .bench_train_memory import train_memory_suite

    report = train_memory_suite()
    out.write_text(json.dumps(report, indent=1))
    table = Table(title=f"finetune, {report['ranks']} CPU ranks, one step · {report['params_m']:.0f} M parameters "
                        f"({report['float32_gib']:.2f} GiB in float32)")  # fmt: skip
    for col in ("load", "after setup", "after one step", "after the save"):
        table.add_column(col + (" (GiB per rank)" if col != "load" else ""), justify="right")
    for load, r in report["loads"].items():
        if "error" in r:
            table.add_row(load, r["error"], "", "")
            continue
        peaks = r["peak_gib_per_rank"]
        table.add_row(load, *(", ".join(f"{p[stage]:.2f}" for p in peaks) for stage in ("setup", "step", "save")))
    render.stdout.print(table)
    render.stdout.print(f"report: {out}")


def _device_suite(out: Path, scale: str) -> None:
    from .bench_device import device_suite

    report = device_suite(out if out.suffix == "" else out.with_suffix(""), scale)
    table = Table(title=f"device check ({scale}) on {report['device']}")
    for col in ("part", "status", "seconds"):
        table.add_column(col)
    for part, r in report["parts"].items():
        table.add_row(part, r["status"], f"{r['seconds']:.1f}")
    render.stdout.print(table)
    render.stdout.print(json.dumps({k: v["result"] for k, v in report["parts"].items()}, indent=1, default=str)[:4000])
