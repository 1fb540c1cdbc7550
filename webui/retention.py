"""What the web server keeps on disk, and for how long.

The server writes its results (PNG files, each carrying its record) into its outputs folder, under names of its own
(``webui/guard.py``: only files so named are ever deleted, so a folder shared with other pictures keeps them), and
the masks the page draws and downscaled copies of very large uploads into ``<outputs>/uploads``; the REST and OpenAI
routes keep each call's uploads in a folder under ``<outputs>/.incoming`` while it runs. Results and uploads older
than ``keep_hours`` are deleted (0: kept for good), when the server starts and then as generations start, through
any door: the page, the Gradio API, the REST and the OpenAI routes share one :class:`~webui.jobs.Jobs`, whose slots
call :meth:`Retention.sweep` (at most once a minute, so a busy server does not list its folders for every image).

What a write cut short leaves behind (a process killed mid-write: an atomic write's hidden ``*.tmp`` file, a REST
call's folder) goes after :data:`STALE_HOURS`, whatever ``keep_hours`` says: it is nobody's result.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .guard import DOWNSCALED_NAME, MASK_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)
KEEP_HOURS = 24.0  # results and uploads older than this are deleted (sigma webui --keep-hours)
UPLOADS = "uploads"  # under the outputs folder: the page's drawn masks and downscaled uploads
INCOMING = ".incoming"  # under the outputs folder: one folder per REST or OpenAI call while it runs
STALE_HOURS = 6.0  # a leftover of a write cut short, or a call's folder, older than this is removed
SWEEP_EVERY_S = 60.0  # the least time between two sweeps as generations start
LEFTOVER_NAME = re.compile(r"\.(sigma|mask)-.+\.png\..+\.tmp")  # files.atomic_write's names for ours: .NAME.RANDOM.tmp


@dataclass
class Retention:
    """The server's outputs folder and how long it keeps what it writes there (``keep_hours``; 0: for good)."""

    outputs: Path
    keep_hours: float = KEEP_HOURS
    every_s: float = SWEEP_EVERY_S
    _last: float = field(default=-math.inf, init=False, repr=False)  # time.monotonic() of the last sweep
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.outputs = Path(self.outputs)

    def sweep(self, *, force: bool = False) -> int:
        """Delete what is no longer kept; unless ``force``, only when the last sweep is ``every_s`` old (another
        thread's sweep meanwhile counts). Returns how many files and folders went."""
        with self._lock:
            if not force and time.monotonic() - self._last < self.every_s:
                return 0
            self._last = time.monotonic()
        uploads = self.outputs / UPLOADS
        removed = clean_old_files(self.outputs, self.keep_hours, OUTPUT_NAME)
        removed += clean_old_files(uploads, self.keep_hours, MASK_NAME, DOWNSCALED_NAME)
        for folder in (self.outputs, uploads):  # an atomic write's hidden temporary name (files.atomic_write)
            removed += clean_old_files(folder, STALE_HOURS, LEFTOVER_NAME)
        return removed + clean_incoming(self.outputs / INCOMING, STALE_HOURS)


def clean_old_files(folder: str | Path, max_age_hours: float, *names: re.Pattern) -> int:
    """Delete the files of ``folder`` whose names match one of ``names`` (the server's own: a folder shared with
    other files keeps those) and that are older than ``max_age_hours`` (0: keep everything)."""
    if max_age_hours <= 0 or not Path(folder).is_dir():
        return 0
    cutoff = time.time() - max_age_hours * 3600
    removed = 0
    try:
        entries = list(Path(folder).iterdir())
    except OSError as exc:  # a folder made unreadable: nothing is deleted, and the generation goes on
        log.warning("cannot sweep %s: %s", folder, exc.strerror or exc)
        return 0
    for path in entries:
        if not any(name.fullmatch(path.name) for name in names):
            continue
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:  # another process removed it first
            continue
    return removed


def call_folder(outputs: str | Path) -> Path:
    """A new folder name (not created) for one API call's files, under ``<outputs>/.incoming``: the uploads of a REST
    or OpenAI call and the downscaled copies of any call, removed as the call ends (or by :func:`clean_incoming`)."""
    return Path(outputs) / INCOMING / f"rest-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def clean_incoming(incoming: Path, max_age_hours: float | None = None) -> int:
    """Remove the upload folders of API calls whose server process is gone (one killed mid-call), and
    with ``max_age_hours`` any older than that (a call cut short whose folder could not be removed)."""
    removed = 0
    cutoff = time.time() - max_age_hours * 3600 if max_age_hours else -math.inf
    for folder in incoming.glob("rest-*") if incoming.is_dir() else []:
        pid = folder.name.split("-")[1]
        try:
            stale = folder.stat().st_mtime < cutoff
        except OSError:  # removed meanwhile (its call ended)
            continue
        if stale or (pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
