"""Atomic file writes: every output goes to a temporary name in the same folder and is renamed into place, so a
reader never sees half a file and an interrupted write leaves the previous version (or nothing)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .errors import InputError


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_output_dir(path: str | Path, option: str = "--out") -> Path:
    """Refuse an output folder that is a file or that cannot be created or written, before any work; creates nothing.

    Returns the path. The check looks at the folder (when it exists) or its nearest existing parent.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} is a file, not a folder: pass a folder (it is created if missing)")
    existing = next(p for p in (path, *path.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise InputError(f"{option} {path} cannot be created: {existing} is a file; pass another folder")
    if not writable(existing):
        what = "is not writable" if existing == path else f"cannot be created: {existing} is not writable"
        raise InputError(f"{option} {path} {what}; pass a folder you can write to")
    return path


def writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder``: a real probe (permission bits say nothing for root, or on a
    read-only mount); the probe file vanishes at once."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def write_json(path: str | Path, data) -> Path:
    """``data`` as indented JSON, atomically."""
    return atomic_write(path, lambda f: f.write(json.dumps(data, indent=1).encode()))


def check_output_file(path: str | Path, overwrite: bool = False) -> Path:
    """``path`` if a file can be written there: refused (one line, before any work) when it is a folder, when a
    file stands where a folder should be, when the folder is read-only, or when it exists and not ``overwrite``."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"--out {path} is a folder: give a file name, e.g. {path / 'result.png'}")
    if path.exists() and not overwrite:
        raise InputError(f"--out {path} exists: pass --overwrite to replace it, or choose another name")
    parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
    if not parent.is_dir():
        raise InputError(f"--out {path}: {parent} is a file, so nothing can be written under it")
    if not writable(parent):
        raise InputError(f"--out {path}: {parent} is not writable; choose another place")
    return path


def _fsync_tree(root: Path) -> None:
    """Flush every file and the directory itself, so a rename that survives a power loss has its data."""
    for path in [*root.iterdir(), root]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_dir(directory: str | Path, fill: Callable[[Path], None]) -> Path:
    """Call ``fill(tmp)`` on a temporary sibling folder, flush it, then swap it into place as ``directory``.

    An interrupted write never leaves a half-filled ``directory``: a previous one stays intact until the swap.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        fill(tmp)
        _fsync_tree(tmp)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory
