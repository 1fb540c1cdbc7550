"""The SIGMA-GEN subjects of a ``sigma batch`` folder's rows, for the per-subject metrics (:mod:`.per_subject`).

``sigma batch`` does not carry a row's ``meta`` column into its folder: each output's record names the dataset row
it came from (``source.row_id``, ``source.instruction``). So the runner re-reads the ``meta`` column of the source
the folder was made from (``sigma eval --data``; with ``--benchmark``, the benchmark itself), by row id, and uses a
row's meta only when the dataset row has the instruction its output's record names.

A SIGMA-GEN row's meta (:mod:`model.data.sigmagen`) names its subjects in order and the routing step; it holds no
boxes or masks. Each subject's region is read from the row's spatial control, the ``<layout>`` image the model
received (kept in the folder's ``references/``): subject k (1-based) is where the ascending or the descending
routing map has intensity step·k. Both maps hold every visible part of every subject, and a dropped routing channel
is all zeros, so the other one still places every subject. The region is the placement the model was given (the
converter's loosened box, 3-D box or mask), at the ground truth's size. A subject's identity is cell k of the
identity sheet (the ``<subject>`` image; :func:`model.request.multisubject.identity_dictionary`), black margin
trimmed.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..config import ROUTING_STEP
from ..errors import MissingDependencyError
from ..request.multisubject import MAX_ROWS
from .base import SubjectRegion

log = logging.getLogger(__name__)

NO_DATA = "no --data: the rows' meta, which names SIGMA-GEN subjects, was not read (give the source of `sigma batch`)"
NOT_SIGMAGEN = "its meta names no subjects: not a SIGMA-GEN row"
SHEET_TOKENS = ("<subject>", "<id>")  # the identity sheet enters under <subject> (<id> for faces)


@dataclass(frozen=True)
class RowMeta:
    """A dataset row as the per-subject metrics need it: its instruction (to check it is the output's row) and its
    meta (None when the row has none, or it is not a JSON object)."""

    instruction: str
    meta: dict | None


def read_metas(source: str, row_ids: set[str], cache_dir: str | None = None) -> dict[str, RowMeta]:
    """The rows of ``source`` (a parquet file, a folder of them or a dataset id, as ``sigma batch`` takes it) named
    in ``row_ids``, by the row ids ``sigma batch`` gives them. A file without a ``meta`` column gives no row; a file
    that cannot be read is logged and gives none (its rows are then not SIGMA-GEN rows to the metrics)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError("pyarrow", None, "Reading the rows' meta (--data)") from None
    from ..data.dataset import parquet_files
    from ..hub import HubOptions

    out: dict[str, RowMeta] = {}
    for path, prefix in parquet_files(source, HubOptions(cache_dir=cache_dir)):
        if not any(r.startswith(f"{prefix}-") for r in row_ids):
            continue
        try:
            pf = pq.ParquetFile(path)
            if "meta" not in pf.schema_arrow.names or "instruction_list" not in pf.schema_arrow.names:
                continue
            table = pf.read(columns=["instruction_list", "meta"]).to_pylist()
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many error types for a broken file
            log.warning("%s: its meta cannot be read (%s); its rows are scored without subjects", path, exc)
            continue
        for k, record in enumerate(table):
            row_id = f"{prefix}-{k:06d}"  # as model.data.dataset.iter_rows names it
            if row_id in row_ids:
                out[row_id] = RowMeta(_instruction(record["instruction_list"]), _meta(record["meta"]))
    return out


def _instruction(value) -> str:
    """instruction_list[0][0] (or [0] of a flat list), "" when there is none."""
    while isinstance(value, list):
        value = value[0] if value else ""
    return value if isinstance(value, str) else ""


def _meta(value) -> dict | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return value if isinstance(value, dict) else None


def tagged(entry: dict, tokens: tuple[str, ...]) -> str | None:
    """The name of the last image the record's sequence gives under one of ``tokens`` (None: no such image)."""
    names = [s["image"] for s in entry.get("sequence", []) if "image" in s and set(tokens) & set(s.get("tokens", []))]
    return names[-1] if names else None


def row_subjects(
    entry: dict, row_meta: RowMeta | None, control: Image.Image | None, sheet: Image.Image | None, frame
) -> tuple[tuple[SubjectRegion, ...] | None, str | None]:
    """(the row's subjects, None), or (None, why it has none) in one line.

    Args:
        entry: the row's line in records.jsonl.
        row_meta: its dataset row (None: not found in --data).
        control: the spatial control the model received (its ``<layout>`` image), None when it had none.
        sheet: the identity sheet (its ``<subject>`` image), None when it had none.
        frame: (width, height) the regions are given at: the ground truth's size, else None for the control's.
    """
    if row_meta is None:
        return None, "its row is not in --data: give the source this folder was made from"
    if row_meta.instruction != (entry.get("source") or {}).get("instruction"):
        return None, "its row in --data has another instruction than its output's record: another source?"
    meta = row_meta.meta or {}
    names = meta.get("subjects")
    if not isinstance(names, list) or not names:
        return None, NOT_SIGMAGEN
    step = meta.get("routing_step", ROUTING_STEP)
    if not isinstance(step, int) or isinstance(step, bool) or not 1 <= step * len(names) <= 255:
        return None, f"its meta's routing_step ({step!r}) cannot place {len(names)} subjects"
    if control is None:
        return None, "its record has no spatial control (<layout> image) to place its subjects"
    control = control.convert("RGB")
    frame = frame or control.size
    maps = np.asarray(control if control.size == frame else control.resize(frame, Image.NEAREST))
    cells = identity_cells(sheet, len(names), meta.get("sheet_rows", MAX_ROWS))
    subjects = tuple(
        SubjectRegion(str(name), (maps[..., 0] == step * k) | (maps[..., 1] == step * k), cells[k - 1])
        for k, name in enumerate(names, start=1)
    )
    if not any(s.mask.any() for s in subjects):
        return None, f"none of its {len(names)} subjects shows in its spatial control (routing step {step})"
    return subjects, None


def identity_cells(sheet: Image.Image | None, count: int, max_rows: int = MAX_ROWS) -> list[Image.Image | None]:
    """Each subject's image in an identity sheet of ``count`` subjects (square cells, up to ``max_rows`` a column,
    filled top to bottom then left to right), its black margin trimmed; None for an empty cell, and for every
    subject when the sheet is absent or not laid out for ``count`` subjects."""
    if not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 1:
        return [None] * count
    columns = math.ceil(count / max_rows)
    rows = math.ceil(count / columns)
    tile = sheet.width // columns if sheet is not None else 0
    if sheet is None or tile == 0 or sheet.size != (tile * columns, tile * rows):
        return [None] * count
    pixels = np.asarray(sheet.convert("RGB"))
    cells: list[Image.Image | None] = []
    for k in range(count):
        x, y = (k // rows) * tile, (k % rows) * tile
        cell = pixels[y : y + tile, x : x + tile]
        ys, xs = np.nonzero(cell.max(axis=-1) > 0)
        cells.append(Image.fromarray(cell[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]) if xs.size else None)
    return cells
