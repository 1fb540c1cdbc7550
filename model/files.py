"""Atomic file writes: every output goes to a temporary name in the same folder and is renamed into place, so a
reader never sees half a file and an interrupted write leaves the previous version (or nothing)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .errors import InputError

MAX_NAME_BYTES = 255  # the longest file name (one path component) Linux, macOS and Windows file systems take
MAX_PATH_BYTES = 4095  # the longest path Linux takes (PATH_MAX, less its terminating zero)
_KINDS = {stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device", stat.S_ISFIFO: "a named pipe",
          stat.S_ISSOCK: "a socket", stat.S_ISDIR: "a folder"}  # fmt: skip


def _not_regular(path: Path) -> str | None:
    """What stands at ``path`` when it is not a regular file (a link is followed): "a named pipe", ...; None when
    nothing is there (a dangling link included) or a regular file is."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there (a file in the way is reported by the caller)
        return None
    except OSError as exc:
        raise InputError(f"{path} cannot be checked ({exc.strerror}); choose another path") from None
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS.items() if test(mode)), "not a regular file")


def check_name_length(path: str | Path, option: str = "") -> None:
    """Refuse a path with a name (one component) over ``MAX_NAME_BYTES`` or a whole path over ``MAX_PATH_BYTES``:
    the OS would refuse it at the first look (ENAMETOOLONG)."""
    path = Path(path)
    label = f"{option} {str(path)[:60]}..." if len(str(path)) > 80 else f"{option} {path}".strip()
    long = [part for part in path.parts if len(os.fsencode(part)) > MAX_NAME_BYTES]
    if long:
        size = len(os.fsencode(long[0]))
        raise InputError(
            f"{label}: the name '{long[0][:40]}...' is {size} bytes; a file name holds at most {MAX_NAME_BYTES}: "
            "choose a shorter name"
        )
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        raise InputError(f"{label}: the path is over {MAX_PATH_BYTES} bytes; choose a shorter one")


def check_replaceable(path: str | Path, option: str = "") -> None:
    """Refuse an output path whose name is too long, or where something other than a regular file stands (a
    device such as /dev/null, a pipe, a socket, a folder, or a link to one): an output only replaces a file."""
    check_name_length(path, option)
    path = Path(path)
    label = f"{option} {path}" if option else str(path)
    kind = _not_regular(path)
    if kind:
        raise InputError(f"{label} is {kind}, not a regular file: an output only replaces a file; choose another name")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file beside ``path``, then rename it to ``path``.

    Every output of every front end is written here, so this is where an output is refused from replacing
    anything but a regular file; an OS error (name too long, disk full, permission) becomes one InputError.
    """
    path = Path(path)
    check_replaceable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the temporary name stays short whatever the target's length (it adds ~14 bytes to the name)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(f"{path} cannot be written ({exc.strerror}); choose another place") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        check_replaceable(path)  # again just before the rename: something may have appeared there meanwhile
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InputError(f"{path} cannot be written ({exc.strerror or exc}); choose another place") from None
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


def write_json(path: str | Path, data, *, default=None) -> Path:
    """``data`` as indented JSON, atomically (``default``: json.dumps's, for values JSON has no type for)."""
    return atomic_write(path, lambda f: f.write(json.dumps(data, indent=1, default=default).encode()))


def check_png_name(path: str | Path, option: str = "--out") -> str | Path:
    """``path`` (as given: a trailing separator stays for :func:`check_output_file` to read) if it names a PNG
    file: a result is written as PNG (its record rides in its text chunks), so a ``.jpg`` name would hold PNG data
    under a name that lies about it. A folder is left to :func:`check_output_file`, which says so."""
    folder = str(path).endswith(("/", os.sep)) or os.path.isdir(path)
    name = Path(path)
    if name.suffix.lower() != ".png" and not folder:
        raise InputError(f"{option} {name}: results are PNG files (each carries its record, for --from); name it "
                         f"{name.with_suffix('.png').name if name.name else 'result.png'}")  # fmt: skip
    return path


def check_output_file(
    path: str | Path, overwrite: bool = False, option: str = "--out", example: str = "result.png"
) -> Path:
    """``path`` if a file can be written there: refused (one line naming ``option``, before any work) when it names
    a folder (one that exists, or a path ending in a separator; the message suggests ``example`` in it), when
    something other than a regular file stands there (a device, a pipe, a link to one), when its name is too long,
    when a file stands where a folder should be, when the folder is read-only, or when it exists and not
    ``overwrite``."""
    text = os.fspath(path)
    path = Path(path)
    check_name_length(path, option)
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise InputError(f"{option} {text} is a folder: give a file name, e.g. {path / example}")
    check_replaceable(path, option)
    if path.exists() and not overwrite:
        raise InputError(f"{option} {path} exists: pass --overwrite to replace it, or choose another name")
    parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
    if not parent.is_dir():
        raise InputError(f"{option} {path}: {parent} is a file, so nothing can be written under it")
    if not writable(parent):
        raise InputError(f"{option} {path}: {parent} is not writable; choose another place")
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

    An interrupted write never leaves a half-filled ``directory``: a previous one stays intact until the swap. An
    OS error (disk full, permission, a read-only place) becomes one InputError, the temporary folder removed.
    """
    directory = Path(directory)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    except OSError as exc:
        raise InputError(f"{directory} cannot be written ({exc.strerror or exc}); choose another place") from None
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
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise InputError(f"{directory} cannot be written ({exc.strerror or exc}); choose another place") from None
        raise
    return directory
