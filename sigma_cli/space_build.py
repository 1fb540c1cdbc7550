"""``sigma space build``: a folder that Hugging Face runs as a Gradio Space, as it is.

What goes in (docs: README "Hosting"):

- ``README.md``: the Space's card (YAML front matter) and what the Space does and cannot do;
- ``app.py``: ``python app.py`` serves the web UI through ``sigma webui`` on 0.0.0.0, port PORT / GRADIO_SERVER_PORT;
- ``requirements.txt``: the package's dependencies, for the Space's hardware (the PyTorch CPU index on CPU);
- the package itself, as an installed wheel: ``sigma_studio/`` and ``sigma_studio-<version>.dist-info/``.

The package travels unpacked rather than as a wheel named in requirements.txt: a Space installs its requirements
with only requirements.txt mounted (``RUN --mount=target=requirements.txt ... pip install -r requirements.txt``),
so a wheel file beside it is not there at that moment and the build fails. Unpacked beside ``app.py`` (the first
entry of ``sys.path`` for ``python app.py``), the package imports with nothing to install, and its
``.dist-info`` gives it its version. From a checkout the wheel is built from the checkout's own packaging
(pyproject.toml: the same files as ``pip install``); from an installed package, the installed files are copied.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from sigma_studio.model.errors import InputError, MissingDependencyError, SigmaError

from .space_files import DEFAULT_HARDWARE, DEFAULT_TITLE, HARDWARE, app_source, card, requirements

DIST = "sigma-studio"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


@dataclass(frozen=True)
class SpaceBuild:
    """What :func:`build_space` wrote: the folder, the hardware it is for, and the package version it carries."""

    folder: Path
    hardware: str
    version: str
    carried_from: str  # "checkout" (a wheel built from it) or "installed" (the installed files)


def check_out(out: Path, overwrite: bool) -> Path:
    """``out`` if a Space can be built there: a missing or empty folder, or any folder with ``overwrite``."""
    from sigma_studio.model.files import check_output_dir

    out = check_output_dir(out, "OUT")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out} exists and is not empty: pass --overwrite to replace it (all of it), or name a new "
                         "folder")  # fmt: skip
    return out


def build_space(
    out: Path, hardware: str = DEFAULT_HARDWARE, *, overwrite: bool = False, title: str = DEFAULT_TITLE
) -> SpaceBuild:
    """Write the Space for ``hardware`` (``cpu`` or ``zero-gpu``) into ``out``, atomically (a previous folder stays
    whole until the new one is complete)."""
    from sigma_studio.model.files import atomic_dir

    if hardware not in HARDWARE:
        raise InputError(f"--hardware {hardware} is not one of {', '.join(HARDWARE)}")
    out = check_out(Path(out), overwrite)
    sdk_version = _gradio_version()
    carried: list[tuple[str, str]] = []

    def fill(folder: Path) -> None:
        umask = os.umask(0)
        os.umask(umask)
        folder.chmod(0o777 & ~umask)  # (a temporary folder is private; the built one is an ordinary folder)
        version, source = carry_package(folder)
        carried.append((version, source))
        requires = _requires(folder)
        (folder / "requirements.txt").write_text(requirements(requires, hardware, version, sdk_version))
        (folder / "app.py").write_text(app_source(hardware, version))
        (folder / "README.md").write_text(card(hardware, version, sdk_version, title=title))

    atomic_dir(out, fill)
    version, source = carried[0]
    return SpaceBuild(out, hardware, version, source)


def carry_package(folder: Path) -> tuple[str, str]:
    """Put the package into ``folder`` as an installed wheel would be; returns (its version, where it came from)."""
    root = checkout_root()
    if root is not None:
        with tempfile.TemporaryDirectory(prefix="sigma-wheel-") as tmp:
            wheel = build_wheel(root, Path(tmp))
            unpack_wheel(wheel, folder)
        source = "checkout"
    else:
        copy_installed(folder)
        source = "installed"
    return _dist_info(folder).version, source


def checkout_root() -> Path | None:
    """The checkout this package runs from (``pip install -e .``), or None for an installed package."""
    import sigma_studio.model

    root = Path(sigma_studio.model.__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "model" / "__init__.py").is_file() else None


def build_wheel(root: Path, into: Path) -> Path:
    """Build the wheel of the checkout at ``root`` into ``into``, from a copy of what pyproject.toml packages (the
    checkout is left alone: no ``build/`` folder, so no stale file from an earlier build can slip in)."""
    project = _pyproject(root)
    src = into / "src"
    src.mkdir()
    shutil.copy2(root / "pyproject.toml", src)
    readme = project["project"].get("readme")
    if isinstance(readme, str):
        shutil.copy2(root / readme, src / readme)
    for folder in sorted(set(project["tool"]["setuptools"]["package-dir"].values())):
        shutil.copytree(root / folder, src / folder, ignore=IGNORE)
    dist = into / "dist"
    dist.mkdir()
    hook = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    try:
        done = subprocess.run([sys.executable, "-c", hook, str(dist)], cwd=src, capture_output=True, text=True)
    except OSError as exc:
        raise SigmaError(f"Building the wheel of {root} could not start: {exc}") from None
    if done.returncode != 0:
        if "No module named 'setuptools'" in done.stderr:
            raise MissingDependencyError("setuptools", None, "Building the Space from a checkout")
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise SigmaError(f"Building the wheel of {root} failed: {last}")
    return dist / done.stdout.strip().splitlines()[-1]


def _pyproject(root: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise MissingDependencyError("tomli", None, "Reading pyproject.toml on Python 3.10") from None
    return tomllib.loads((root / "pyproject.toml").read_text())


def unpack_wheel(wheel: Path, folder: Path) -> None:
    """Unpack a pure-Python wheel into ``folder``, as pip installs one into site-packages (no scripts)."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        wheel_info = next((n for n in names if n.endswith(".dist-info/WHEEL")), None)
        if wheel_info is None or "Root-Is-Purelib: true" not in zf.read(wheel_info).decode():
            raise SigmaError(f"{wheel.name} is not a pure-Python wheel; a Space cannot carry it as files")
        for name in names:
            target = (folder / name).resolve()
            if ".data/" in name or not target.is_relative_to(folder.resolve()):
                continue  # (scripts and headers; and no member may land outside the folder)
            zf.extract(name, folder)


def copy_installed(folder: Path, dist: importlib.metadata.Distribution | None = None) -> None:
    """Copy the installed package's files (its RECORD: the package and its .dist-info) into ``folder``."""
    dist = dist or importlib.metadata.distribution(DIST)
    files = [f for f in dist.files or [] if f.parts[0] == "sigma_studio" or f.parts[0].endswith(".dist-info")]
    if not any(f.parts[0] == "sigma_studio" for f in files):
        raise SigmaError(f"The installed {DIST} lists none of its files; reinstall it (pip install sigma-studio)")
    for f in files:
        if f.suffix in (".pyc", ".pyo") or "__pycache__" in f.parts:
            continue
        target = folder / Path(*f.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(dist.locate_file(f), target)


def _dist_info(folder: Path) -> importlib.metadata.Distribution:
    infos = sorted(folder.glob("sigma_studio-*.dist-info"))
    if len(infos) != 1:
        raise SigmaError(f"The package carried into {folder} has {len(infos)} .dist-info folders, not one")
    return importlib.metadata.PathDistribution(infos[0])


def _requires(folder: Path) -> list[str]:
    return list(_dist_info(folder).requires or [])


def _gradio_version() -> str:
    """The Space's Gradio (its card's ``sdk_version``): the one installed here, which the web UI runs on."""
    try:
        return importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError:
        raise MissingDependencyError("gradio", "webui", "Building a Space (its Gradio is the one here)") from None
