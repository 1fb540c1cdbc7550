"""Reading a generated picture of the shapes world back by its pixels, and scoring it per task family.

For one picture and what its target must show (the row's ``meta``):

* **background**: the median colour of the one-pixel border, snapped to the nearest of grey and the palette;
* **foreground**: pixels further than :data:`FG_DISTANCE` (max over channels) from that background colour;
* **colour**: the median foreground colour, snapped to the nearest palette colour;
* **shape**: the shape whose template, fitted to the foreground's bounding box, overlaps it best (IoU);
* **placed**: the foreground's centroid lies inside the target box (the layout family's criterion);
* **fits**: the foreground's bounding box overlaps the target box with IoU >= :data:`FIT_IOU` (a stricter check:
  62 % of the held-out boxes contain the canvas centre, so a centred object is often "placed").

None of this looks at a model: any picture drawn to the world's rules scores 100 %, and a plain grey picture
scores 0 %. Family criteria: compose, select, text: shape and colour right; layout: centroid in the box;
background: shape, colour and background colour right. Token-swap consistency (compose) is the share of swap
pairs whose two rows are both right.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from .world import COLOURS, GREY, SHAPES, mask

log = logging.getLogger(__name__)

FG_DISTANCE = 28
FIT_IOU = 0.5  # "fits": the foreground's bounding box overlaps the target box at least this much (IoU)
_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)
_BACKGROUNDS = {"grey": GREY, **COLOURS}


@dataclass(frozen=True)
class Reading:
    """What a picture shows, read by pixels."""

    shape: str | None
    colour: str | None
    background: str
    centroid: tuple[float, float] | None
    box: tuple[int, int, int, int] | None  # foreground bounding box (left, top, width, height)
    coverage: float  # share of pixels in the foreground
    iou: float  # the best template's overlap


@lru_cache(maxsize=64)
def _tight_fraction(shape: str) -> tuple[float, float, float, float]:
    """Where a shape's own pixels lie inside the square box it fills (fractions of the side)."""
    m = np.asarray(mask(shape, (16.0, 16.0, 96.0, 96.0), canvas=128)) > 127
    ys, xs = np.nonzero(m)
    return ((xs.min() - 16) / 96, (ys.min() - 16) / 96, (xs.max() + 1 - 16) / 96, (ys.max() + 1 - 16) / 96)


def _template_box(shape: str, box: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
    """The square-ish box a shape must fill so that its own pixels cover ``box`` exactly."""
    x, y, w, h = box
    fx0, fy0, fx1, fy1 = _tight_fraction(shape)
    bw, bh = w / (fx1 - fx0), h / (fy1 - fy0)
    return (x - fx0 * bw, y - fy0 * bh, bw, bh)


def nearest_colour(rgb: np.ndarray) -> str:
    return list(COLOURS)[int(np.argmin(((_PALETTE - rgb[None]) ** 2).sum(-1)))]


def read(img: Image.Image) -> Reading:
    """Read one picture (any size; it is looked at in RGB)."""
    px = np.asarray(img.convert("RGB"), dtype=np.float32)
    h, w, _ = px.shape
    border = np.concatenate([px[0], px[-1], px[:, 0], px[:, -1]])
    bg_rgb = np.median(border, axis=0)
    bg_name = min(_BACKGROUNDS, key=lambda k: float(((np.array(_BACKGROUNDS[k]) - bg_rgb) ** 2).sum()))
    fg = np.abs(px - np.array(_BACKGROUNDS[bg_name], dtype=np.float32)).max(-1) > FG_DISTANCE
    coverage = float(fg.mean())
    if fg.sum() < 12:
        return Reading(None, None, bg_name, None, None, coverage, 0.0)
    ys, xs = np.nonzero(fg)
    colour = nearest_colour(np.median(px[fg], axis=0))
    box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
    best, best_iou = None, -1.0
    for shape in SHAPES:  # drawn on a square canvas as large as the picture's long side, then cropped to it
        tmpl = np.asarray(mask(shape, _template_box(shape, box), canvas=max(w, h)), dtype=np.float32)[:h, :w] / 255
        iou = float(np.minimum(tmpl, fg).sum() / max(1e-6, np.maximum(tmpl, fg).sum()))
        if iou > best_iou:
            best, best_iou = shape, iou
    return Reading(best, colour, bg_name, (float(xs.mean()) + 0.5, float(ys.mean()) + 0.5), box, coverage, best_iou)


def box_iou(a, b) -> float:
    """IoU of two (left, top, width, height) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def score(img: Image.Image, meta: dict, family: str) -> dict:
    """Per-row verdicts: ``shape``, ``colour``, ``placed``, ``background`` and the family's ``ok``."""
    r = read(img)
    x, y, w, h = meta["box"]
    placed = r.centroid is not None and x <= r.centroid[0] <= x + w and y <= r.centroid[1] <= y + h
    bg_want = next((k for k, v in _BACKGROUNDS.items() if list(v) == list(meta["background"])), "grey")
    verdict = {
        "shape": r.shape == meta["shape"],
        "colour": r.colour == meta["colour"],
        "placed": placed,
        "fits": r.box is not None and box_iou(r.box, meta["box"]) >= FIT_IOU,
        "background": r.background == bg_want,
    }
    if family == "layout":
        ok = placed
    elif family == "background":
        ok = verdict["shape"] and verdict["colour"] and verdict["background"]
    else:
        ok = verdict["shape"] and verdict["colour"]
    return {**verdict, "ok": ok, "reading": asdict(r)}


KEYS = ("ok", "shape", "colour", "placed", "fits", "background")


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Per family: n, accuracy (the family criterion), shape / colour / placed rates, and token-swap
    consistency where rows carry a ``swap`` id. ``rows``: dicts with ``family``, ``meta`` and ``verdict``."""
    by_family: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_family[row["family"]].append(row)
    out = {}
    for family, items in sorted(by_family.items()):
        n = len(items)
        rates = {key: sum(bool(i["verdict"][key]) for i in items) / n for key in KEYS}
        entry = {"n": n, "accuracy": rates.pop("ok"), **rates}
        swaps: dict[int, list[bool]] = defaultdict(list)
        for i in items:
            if i["meta"].get("swap") is not None:
                swaps[i["meta"]["swap"]].append(bool(i["verdict"]["ok"]))
        pairs = [v for v in swaps.values() if len(v) == 2]
        if pairs:
            entry["swap_pairs"] = len(pairs)
            entry["swap_consistency"] = sum(all(v) for v in pairs) / len(pairs)
        out[family] = entry
    return out


def load_meta(value: str | dict) -> dict:
    return value if isinstance(value, dict) else json.loads(value)


EVAL_COLUMNS = ("instruction_list", "image_list", "family", "meta")


def eval_files(eval_dir: str | Path) -> list[Path]:
    """The held-out parquet files under ``eval_dir`` (a world folder's ``eval/`` is taken when given the world
    folder). Raises InputError for a folder whose files lack the world's ``family`` / ``meta`` columns."""
    import pyarrow.parquet as pq

    root = Path(eval_dir)
    if (root / "eval").is_dir():
        root = root / "eval"
    files = sorted(root.rglob("*.parquet")) if root.is_dir() else [root] if root.is_file() else []
    if not files:
        raise InputError(f"{eval_dir} holds no parquet files; write the world with `sigma shapes make --out DIR`")
    for f in files:
        try:
            names = pq.read_schema(f).names
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many error types for a broken or foreign file
            raise InputError(f"{f} is not a readable parquet file ({str(exc).splitlines()[0]}); pass the eval/ "
                             "folder `sigma shapes make` writes") from None  # fmt: skip
        missing = [c for c in EVAL_COLUMNS if c not in names]
        if missing:
            raise InputError(
                f"{f} has no {', '.join(missing)} column: the shapes evaluation reads rows written by "
                "`sigma shapes make` (its eval/ folder)"
            )
    return files


def generate_row(pipe, row_id: str, rec: dict, config):
    """One held-out row generated as ``sigma batch`` lays it out (:func:`model.data.batch.row_prompt`): every picture
    but the last (the target) is a reference. None, logged, when its pictures cannot be decoded."""
    from ..data.batch import row_prompt
    from ..data.dataset import SigmaRow

    row = SigmaRow(row_id, rec["instruction_list"][0][0], tuple(rec["image_list"]))
    try:
        images = row.decode_images()
    except InputError as exc:
        log.warning("skipping %s: %s", row_id, exc)
        return None
    return pipe(row_prompt(row, len(images)), images[:-1], config=config)


def evaluate_pipeline(
    pipe,
    eval_dir: str | Path,
    *,
    per_family: int | None = None,
    families: tuple[str, ...] | None = None,
    config=None,
    seed: int = 0,
    save_dir: str | Path | None = None,
    on_row=None,
) -> tuple[dict[str, dict], list[dict]]:
    """Generate every held-out row of ``eval_dir`` with ``pipe`` and score it by pixels.

    Each row's references are laid out as ``sigma batch`` lays them (:func:`model.data.batch.row_prompt`); row ``k``
    of a family is generated with seed ``seed + k``. Returns (per-family summary, per-row records). Compose swap
    pairs are kept together when ``per_family`` cuts a family short (it is rounded up to an even number). A row
    whose pictures cannot be decoded is skipped and logged.
    """
    import pyarrow.parquet as pq

    from ..config import GenerationConfig
    from ..images import save_png

    config = config or GenerationConfig()
    limit = None if per_family is None else per_family + per_family % 2
    records, seen = [], defaultdict(int)
    for path in eval_files(eval_dir):
        for rec in pq.read_table(path, columns=list(EVAL_COLUMNS)).to_pylist():
            family, k = rec["family"], seen[rec["family"]]
            if (families and family not in families) or (limit is not None and k >= limit):
                continue
            seen[family] += 1
            result = generate_row(pipe, f"{family}-{k:06d}", rec, config.replace(seed=seed + k))
            if result is None:
                continue
            meta = load_meta(rec["meta"])
            if save_dir is not None:
                save_png(result.image, Path(save_dir) / family / f"{k:04d}.png")
            record = {"family": family, "row": k, "instruction": rec["instruction_list"][0][0], "meta": meta,
                      "verdict": score(result.image, meta, family), "seconds": result.seconds}  # fmt: skip
            records.append(record)
            if on_row is not None:
                on_row(record)
    return summarise(records), records
