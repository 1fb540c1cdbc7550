"""``sigma info``: what this machine has and what it can run."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from sigma_studio.model.config import MODES
from sigma_studio.model.presets import sigma_7b
from sigma_studio.model.weights.loader import build_model
from sigma_studio.model.weights.modes import GiB, bitsandbytes_available, choose_mode, probe, weight_bytes

from . import render

PACKAGES = ("torch", "transformers", "accelerate", "huggingface_hub", "bitsandbytes", "flash-attn", "gradio", "peft")


@dataclass
class Info:
    python: str
    packages: dict[str, str]
    gpus: list[tuple[str, float, float]]
    cpu_memory: tuple[float, float]  # (available, total) GiB
    modes: dict[str, str]
    auto: tuple[str, str]
    cache: Path
    cached: list[tuple[str, float]] = field(default_factory=list)


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "—"


def _meminfo() -> tuple[int, int] | None:
    """(available, total) bytes from /proc/meminfo, or None where it is missing or unreadable."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        kib = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in lines if ":" in line)}
        return kib["MemAvailable"] * 1024, kib["MemTotal"] * 1024
    except (OSError, KeyError, ValueError, IndexError):
        return None


def cpu_memory() -> tuple[int, int]:
    """(available, total) bytes of CPU memory: /proc/meminfo on Linux, sysconf elsewhere; (0, 0) when unknown."""
    linux = _meminfo()
    if linux is not None:
        return linux
    try:
        page, total = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0, 0
    try:
        available = os.sysconf("SC_AVPHYS_PAGES")  # not on every system (macOS lacks it)
    except (ValueError, OSError):
        available = total
    return available * page, total * page


def cpu_mode_status(need: int, available: int) -> str:
    """``yes``, or why the float32 weights do not fit in the CPU memory available now."""
    if available >= need:
        return "yes"
    return f"needs about {need / GiB:.0f} GiB of CPU memory for float32 weights; {available / GiB:.1f} GiB available"


def collect(cache: Path) -> Info:
    dev = probe()
    meta = build_model(sigma_7b(), "meta")  # shapes only: allocates nothing
    has_bnb = bitsandbytes_available()
    available, total = cpu_memory()
    modes = {}
    for mode in MODES[1:]:
        try:
            choose_mode(mode, meta, dev, has_bnb)
            modes[mode] = "yes"
        except Exception as exc:  # noqa: BLE001 - each mode's reason is what we want to show
            modes[mode] = str(exc)
    modes["cpu"] = cpu_mode_status(weight_bytes(meta, "cpu"), available)
    auto = choose_mode("auto", meta, dev, has_bnb)
    if auto[0] == "cpu" and modes["cpu"] != "yes":  # nothing runs the 7B model here: say so, do not offer cpu
        modes = {m: s.replace("; use --mode cpu", "") for m, s in modes.items()}
        auto = ("nothing", f"{auto[1]}, and the 7B model {modes['cpu']}; --model shapes or tiny run here")
    cached = [(repo.name[len("models--") :].replace("--", "/"), _bytes(repo) / GiB) for repo in _repos(cache)]
    return Info(
        python=platform.python_version(),
        packages={p: _version(p) for p in PACKAGES},
        gpus=[(g.name, g.free / GiB, g.total / GiB) for g in dev.gpus],
        cpu_memory=(available / GiB, total / GiB),
        modes=modes,
        auto=auto,
        cache=cache,
        cached=cached,
    )


def _repos(cache: Path) -> list[Path]:
    """The model folders of a Hugging Face cache (none when it is missing or cannot be listed)."""
    try:
        return sorted(cache.glob("models--*")) if cache.is_dir() else []
    except OSError:
        return []


def _bytes(repo: Path) -> int:
    """The bytes of a cached repository's files; a file that cannot be read, or vanishes mid-scan (a download
    running beside this), is skipped."""
    total = 0
    try:
        for path in repo.rglob("*"):
            try:
                if path.is_file() and not path.is_symlink():
                    total += path.stat().st_size
            except OSError:
                continue
    except OSError:  # a folder removed while it was listed: what was counted stands
        return total
    return total


def show(info: Info) -> None:
    out = render.stdout
    versions = Table(title="Software", show_header=False, title_justify="left")
    versions.add_row("python", info.python)
    for name, version in info.packages.items():
        versions.add_row(name, version)
    out.print(versions)
    gpus = Table(title="Devices", title_justify="left")
    for col in ("device", "free GiB", "total GiB"):
        gpus.add_column(col)
    for name, free, total in info.gpus:
        gpus.add_row(name, f"{free:.1f}", f"{total:.1f}")
    cpu = "CPU memory" if info.gpus else "CPU memory (no CUDA GPU visible)"
    gpus.add_row(cpu, *(f"{v:.1f}" if v else "unknown" for v in info.cpu_memory))
    out.print(gpus)
    modes = Table(title="Loading modes (SIGMA 7B)", title_justify="left")
    modes.add_column("mode")
    modes.add_column("possible here")
    for mode, status in info.modes.items():
        modes.add_row(mode, "[green]yes[/]" if status == "yes" else f"[dim]{status}[/]")
    out.print(modes)
    out.print(f"auto would choose [bold]{info.auto[0]}[/]: {info.auto[1]}")
    out.print("the small models ([bold]shapes[/], [bold]tiny[/]) run on any machine, --mode cpu included")
    out.print(f"weights cache: {info.cache}")
    for repo, size in info.cached:
        out.print(f"  {repo}  {size:.1f} GiB")
    if not info.cached:
        out.print("  (nothing cached yet: `sigma download sigma`)")
