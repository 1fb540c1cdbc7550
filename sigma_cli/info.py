"""``sigma info``: what this machine has and what it can run."""

from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from sigma_studio.model.config import sigma_7b
from sigma_studio.model.modes import MODES, GiB, bitsandbytes_available, choose_mode, probe

from . import render

PACKAGES = ("torch", "transformers", "accelerate", "huggingface_hub", "bitsandbytes", "flash-attn", "gradio", "peft")


@dataclass
class Info:
    python: str
    packages: dict[str, str]
    gpus: list[tuple[str, float, float]]
    modes: dict[str, str]
    auto: tuple[str, str]
    cache: Path
    cached: list[tuple[str, float]] = field(default_factory=list)


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "—"


def collect(cache: Path) -> Info:
    dev = probe()
    arch = sigma_7b()
    has_bnb = bitsandbytes_available()
    modes = {}
    for mode in MODES[1:]:
        try:
            choose_mode(mode, arch, dev, has_bnb)
            modes[mode] = "yes"
        except Exception as exc:  # noqa: BLE001 - each mode's reason is what we want to show
            modes[mode] = str(exc)
    cached = []
    if cache.is_dir():
        for repo in sorted(cache.glob("models--*")):
            size = sum(f.stat().st_size for f in repo.rglob("*") if f.is_file() and not f.is_symlink())
            cached.append((repo.name[len("models--") :].replace("--", "/"), size / GiB))
    return Info(
        python=platform.python_version(),
        packages={p: _version(p) for p in PACKAGES},
        gpus=[(g.name, g.free / GiB, g.total / GiB) for g in dev.gpus],
        modes=modes,
        auto=choose_mode("auto", arch, dev, has_bnb),
        cache=cache,
        cached=cached,
    )


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
    for name, free, total in info.gpus or [("CPU only (no CUDA GPU visible)", 0.0, 0.0)]:
        gpus.add_row(name, f"{free:.1f}", f"{total:.1f}")
    out.print(gpus)
    modes = Table(title="Loading modes (SIGMA 7B)", title_justify="left")
    modes.add_column("mode")
    modes.add_column("possible here")
    for mode, status in info.modes.items():
        modes.add_row(mode, "[green]yes[/]" if status == "yes" else f"[dim]{status}[/]")
    out.print(modes)
    out.print(f"auto would choose [bold]{info.auto[0]}[/]: {info.auto[1]}")
    out.print(f"weights cache: {info.cache}")
    for repo, size in info.cached:
        out.print(f"  {repo}  {size:.1f} GiB")
    if not info.cached:
        out.print("  (nothing cached yet: `sigma download sigma`)")
