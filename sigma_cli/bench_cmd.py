"""``sigma bench``: parses the options and runs one suite of the benchmark library (``sigma_cli/bench/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sigma_studio.model.config import MODES
from sigma_studio.model.errors import InputError, SigmaError
from sigma_studio.model.files import check_output_dir, check_output_file
from sigma_studio.model.presets import PRESETS

from . import render
from .bench.device import DEFAULT_PARTS, PARTS, device_suite
from .bench.layouts import layout_suite
from .bench.modes import benchmark
from .bench.report import (
    report_device,
    report_layouts,
    report_modes,
    report_speed,
    report_throughput,
    report_train_memory,
)
from .bench.speed import speed_suite
from .bench.throughput import throughput_suite
from .bench.train_memory import train_memory_suite
from .options import DebugOpt, GpuMemOpt

SUITES = ("modes", "layouts", "speed", "throughput", "train-memory", "device")
DEVICES = ("cuda", "cpu")
FULL_SCALE = ("bagel-7b-mot", "sigma-7b")  # presets the modes suite runs on a GPU only


def bench_command(
    preset: Annotated[str, typer.Option(help="bagel-7b-mot (full scale) | tiny")] = "bagel-7b-mot",
    modes: Annotated[str, typer.Option(help="comma-separated: bf16,nf4,int8,offload,cpu")] = "bf16,nf4,int8,offload",
    device: Annotated[str, typer.Option(help="cuda | cpu")] = "cuda",
    size: Annotated[int, typer.Option(min=16, help="output and reference side in pixels")] = 1024,
    steps: Annotated[int, typer.Option(min=1, help="denoising steps")] = 50,
    max_gpu_memory: GpuMemOpt = "8GiB",
    out: Annotated[Path, typer.Option(help="JSON report")] = Path("bench.json"),
    parts: Annotated[str | None, typer.Option(help=f"--suite device only: comma list of {', '.join(PARTS)}")] = None,
    suite: Annotated[
        str,
        typer.Option(
            help="modes: every loading mode | layouts: the trained layout's cost | speed: fewer evaluations "
            "against quality | train-memory: peak memory per rank of a 2-process finetune, full against sharded "
            "load | throughput: 1, 2, 4 requests generated together (these four on the CPU; throughput takes "
            "--size and --steps) | device: the GPU check (--preset tiny: its toy run)"
        ),
    ] = "modes",
    debug: DebugOpt = False,
) -> None:
    """Time text-to-image and SIGMA compositional generation in every mode (random weights, real FLOPs).

    [b]Examples[/]

      sigma bench --preset tiny --device cpu --modes cpu --size 128 --steps 6

      sigma bench --suite layouts --size 256 --steps 10     [dim]# the numbers in docs/PERF.md[/]

      sigma bench --suite device --out device/                [dim]# on a lent GPU: every check, about 8 min[/]
    """
    with render.errors(debug):
        check_options(suite, preset, modes, device, out)
        run_suite(suite, preset, modes, device, size, steps, max_gpu_memory, out, parts)


def check_options(suite: str, preset: str, modes: str, device: str, out: Path) -> None:
    """Refuse, before any work, a value that names nothing or a report that could not be written."""
    for option, value, known in (("--suite", suite, SUITES), ("--preset", preset, tuple(PRESETS)),
                                 ("--device", device, DEVICES)):  # fmt: skip
        if value not in known:
            raise InputError(f"{option} {value!r} is not one of {', '.join(known)}")
    if suite == "modes":
        unknown = [m for m in modes.split(",") if m.strip() not in MODES]
        if unknown or not modes.strip():
            raise InputError(f"--modes {modes!r}: each must be one of {', '.join(MODES)}")
        if device == "cpu" and preset in FULL_SCALE:
            raise InputError(f"--preset {preset} on the CPU would hold 14 B parameters in float32 (about 56 GB) for "
                             "hours: on the CPU use --preset tiny or shapes")  # fmt: skip
        if device == "cuda" and not torch_cuda():
            raise InputError("--device cuda: this machine has no CUDA GPU; on the CPU: sigma bench --preset tiny "
                             "--device cpu --modes cpu --size 128 --steps 6")  # fmt: skip
    if suite == "device":
        check_output_dir(device_folder(out), "--out")
    else:
        check_output_file(out, overwrite=True, option="--out", example="bench.json")


def device_folder(out: Path) -> Path:
    """The device suite's folder: ``--out``, without the ``.json`` of the other suites' default file."""
    return out.with_suffix("") if out.suffix == ".json" else out


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_suite(suite, preset, modes, device, size, steps, max_gpu_memory, out: Path, parts) -> None:
    if suite == "layouts":
        return report_layouts(layout_suite(size, steps), out)
    if suite == "speed":
        return report_speed(speed_suite(), out)
    if suite == "throughput":
        return report_throughput(throughput_suite(size=size, steps=steps), out)
    if suite == "train-memory":
        return report_train_memory(train_memory_suite(), out)
    if suite == "device":
        scale = "toy" if preset == "tiny" else "full"
        chosen = DEFAULT_PARTS if parts is None else tuple(p.strip() for p in parts.split(",") if p.strip())
        unknown = [p for p in chosen if p not in PARTS]
        if unknown or not chosen:
            raise InputError(f"--parts {parts!r}: each must be one of {', '.join(PARTS)}")
        return report_device(device_suite(device_folder(out), scale, chosen), scale)
    report = benchmark(preset, [m.strip() for m in modes.split(",")], device, size, steps, out, max_gpu_memory)
    report_modes(report, out)
    if not report["results"]:
        raise SigmaError(f"no mode ran on {device} (each one's reason is above; the report is {out})")
