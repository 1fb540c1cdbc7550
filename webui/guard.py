"""What a browser may name: files this server stored itself, by name, never a server path.

Values that come from the page (the history kept in the browser, the masks table, a record) are untrusted: a hostile
client can send any text there. So the page keeps only the *names* of the files the server wrote (an output PNG, a
drawn mask), and the server finds them again inside its own folders. A name that is not one the server makes, or
that resolves (through links) outside the folder, names nothing. Uploads reach handlers as Gradio's own checked
upload paths and are not handled here.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath

OUTPUT_NAME = re.compile(r"sigma-\d{8}-\d{6}-\d{1,20}-[0-9a-f]{8}\.png")  # handlers.run_request's names
MASK_NAME = re.compile(r"mask-[0-9a-f]{12}\.png")  # store_mask's names
DOWNSCALED_NAME = re.compile(r".{1,64}-[0-9a-f]{8}\.png")  # handlers.prepare_upload's copies of large uploads


def inside(path: str | Path, folder: str | Path) -> Path | None:
    """``path`` resolved, when it is a regular file inside ``folder`` (links followed); else None."""
    try:
        real, root = Path(path).resolve(strict=True), Path(folder).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, a link loop, a NUL byte
        return None
    return real if real.is_file() and real.is_relative_to(root) else None


def stored(value, folder: str | Path, pattern: re.Pattern) -> Path | None:
    """The file of ``folder`` that a page value names (its last path component is all that is read, so an entry
    kept by an older version, which held the whole path, still finds its file); None for anything else."""
    if not isinstance(value, str) or not value or len(value) > 4096:
        return None
    name = PurePath(value.replace("\\", "/")).name
    if not pattern.fullmatch(name):
        return None
    return inside(Path(folder) / name, folder)


def stored_output(value, outputs: str | Path) -> Path | None:
    """An output PNG of this server's ``outputs`` folder named by the page (a history entry)."""
    return stored(value, outputs, OUTPUT_NAME)


def store_mask(mask, uploads: str | Path) -> Path:
    """A subject mask (a PIL picture) saved in ``uploads`` under a fresh name of the kind :func:`stored_mask` finds."""
    import uuid

    from sigma_studio.model.images import save_png

    return save_png(mask, Path(uploads) / f"mask-{uuid.uuid4().hex[:12]}.png")


def stored_mask(value, uploads: str | Path) -> Path | None:
    """A mask the page drew and the server saved in ``uploads`` (a row of the masks table)."""
    return stored(value, uploads, MASK_NAME)


def within_any(path: str | Path | None, folders) -> Path | None:
    """``path`` when it is a regular file inside one of ``folders`` (None-safe)."""
    if not path:
        return None
    return next((real for folder in folders if (real := inside(path, folder)) is not None), None)
