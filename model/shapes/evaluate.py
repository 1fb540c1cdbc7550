"""Scoring a generated picture of the shapes world against what its target must show (the row's ``meta``), per
task family, and running the held-out evaluation with a pipeline.

The picture is read by :func:`.reader.read` (background, foreground, colour, coverage, shape: see
:mod:`.reader`). The target's ``meta`` says what must be drawn and where: the shape, the colour, the box it fills
(centred at the world's sizes for compose, select, background and text; the layout box for layout) and the
background. Per row:

* **shape**: the read shape (the best-fitting template, with a minimum fit) is the target's;
* **colour**: the read colour is the target's;
* **placed**: the object's coverage overlaps the target's own template drawn in the target's box with soft IoU
  >= :data:`PLACE_IOU`. The whole foreground counts, so a shape at the wrong place, at the wrong size, drawn twice or
  beside anything else fails it;
* **background**: the read background is the target's;
* **single**: the foreground is one object (:func:`.reader.count_objects`): a second one, however small, is wrong;
* **fits**, **in_box**: the foreground's bounding box overlaps the target box with IoU >= :data:`FIT_IOU`, and its
  centroid lies inside the target box (the earlier, lenient layout criterion): shown, never required.

A row is right (``ok``) when shape, colour, placed, background and single all hold, in every family. Any picture
drawn to the world's rules scores 100 %; a blank picture, a copy of a reference, a constant shape, or the right
shape at the wrong place or size, or with a second object, score no more than what such a guess is worth
(tests/test_shapes_reader.py). Token-swap consistency (compose) is the share of swap pairs whose two rows are
both right.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from PIL import Image

from ..errors import InputError
from .reader import BACKGROUNDS, FG_DISTANCE, Reading, box_iou, nearest_colour, read, read_alpha, soft_iou, template
from .tasks import EVAL_PAIRS

log = logging.getLogger(__name__)

__all__ = ["FG_DISTANCE", "Reading", "box_iou", "nearest_colour", "read", "score", "summarise", "evaluate_pipeline"]

PLACE_IOU = 0.5  # "placed": the object's coverage overlaps the target's template at least this much (soft IoU)
FIT_IOU = 0.5  # "fits": the foreground's bounding box overlaps the target box at least this much (IoU)


def score(img: Image.Image, meta: dict, family: str) -> dict:
    """Per-row verdicts: ``shape``, ``colour``, ``placed``, ``background``, ``single`` (together ``ok``, the
    criterion of every family), ``fits`` and ``in_box`` (shown only), the overlap ``place_iou`` and the ``reading``."""
    r, alpha = read_alpha(img)
    x, y, w, h = meta["box"]
    expected = template(meta["shape"], meta["box"], *alpha.shape)
    place_iou = soft_iou(alpha, expected)
    bg_want = next((k for k, v in BACKGROUNDS.items() if list(v) == list(meta["background"])), "grey")
    verdict = {
        "shape": r.shape == meta["shape"],
        "colour": r.colour == meta["colour"],
        "placed": place_iou >= PLACE_IOU,
        "fits": r.box is not None and box_iou(r.box, meta["box"]) >= FIT_IOU,
        "in_box": r.centroid is not None and x <= r.centroid[0] <= x + w and y <= r.centroid[1] <= y + h,
        "background": r.background == bg_want,
        "single": r.objects == 1,
    }
    ok = all(verdict[key] for key in ("shape", "colour", "placed", "background", "single"))
    return {**verdict, "ok": ok, "place_iou": round(place_iou, 3), "reading": asdict(r)}


KEYS = ("ok", "shape", "colour", "placed", "single", "fits", "in_box", "background")


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Per family: n, accuracy (the family criterion), the shape / colour / placed / single / fits / in_box /
    background rates, and token-swap consistency where rows carry a ``swap`` id. ``rows``: dicts with ``family``,
    ``meta`` and ``verdict`` (a verdict without one of the shown keys counts it as not held)."""
    by_family: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_family[row["family"]].append(row)
    out = {}
    for family, items in sorted(by_family.items()):
        n = len(items)
        rates = {key: sum(bool(i["verdict"].get(key)) for i in items) / n for key in KEYS}
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


def eval_pairs(eval_dir: str | Path) -> str:
    """Which pairs the rows under ``eval_dir`` (a world, its eval/ folder or one of its files) target: "seen" for a
    world written with ``eval_pairs="seen"`` (its world.json says so), otherwise "held-out" (worlds written before
    the option, and rows from elsewhere)."""
    root = Path(eval_dir)
    for world in (root / "world.json", root.parent / "world.json", root.parent.parent / "world.json"):
        try:
            pairs = json.loads(world.read_text()).get("eval_pairs")
        except (OSError, ValueError, AttributeError):
            continue
        return pairs if pairs in EVAL_PAIRS else EVAL_PAIRS[0]
    return EVAL_PAIRS[0]


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


def reconstruction(pipe, img: Image.Image) -> Image.Image:
    """``img`` encoded (posterior mean) and decoded by the model's autoencoder: what the autoencoder lets through."""
    import torch

    from ..images import to_pil, to_tensor

    with torch.no_grad():
        return to_pil(pipe.vae.decode(pipe.vae.encode(to_tensor(img.convert("RGB"))[None]))[0])


def reconstructed_row(pipe, row_id: str, rec: dict):
    """The row's target through the autoencoder, as a result (None, logged, when its pictures cannot be decoded)."""
    from types import SimpleNamespace

    from ..data.dataset import SigmaRow

    try:
        images = SigmaRow(row_id, "", tuple((rec.get("image_list") or ())[-1:])).decode_images()  # the target
    except InputError as exc:
        log.warning("skipping %s: %s", row_id, exc)
        return None
    if not images:
        log.warning("skipping %s: it has no target picture", row_id)
        return None
    return SimpleNamespace(image=reconstruction(pipe, images[-1]), seconds=0.0)


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
    reconstruct: bool = False,
) -> tuple[dict[str, dict], list[dict]]:
    """Generate every held-out row of ``eval_dir`` with ``pipe`` and score it by pixels.

    Each row's references are laid out as ``sigma batch`` lays them (:func:`model.data.batch.row_prompt`); row ``k``
    of a family is generated with seed ``seed + k``. Returns (per-family summary, per-row records). Compose swap
    pairs are kept together when ``per_family`` cuts a family short (it is rounded up to an even number). A row
    whose pictures cannot be decoded is skipped and logged. ``reconstruct`` scores each target through the model's
    autoencoder instead of generating: the ceiling the autoencoder puts on every figure.
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
            row_id = f"{family}-{k:06d}"
            if reconstruct:
                result = reconstructed_row(pipe, row_id, rec)
            else:
                result = generate_row(pipe, row_id, rec, config.replace(seed=seed + k))
            if result is None:
                continue
            meta = load_meta(rec["meta"])
            if save_dir is not None:
                save_png(result.image, Path(save_dir) / family / f"{k:04d}.png")
            record = {"family": family, "row": k, "instruction": rec["instruction_list"][0][0], "meta": meta,
                      "verdict": score(result.image, meta, family), "seconds": result.seconds}  # fmt: skip
            if getattr(result, "plan", None) is not None:  # think mode: what the model planned before drawing
                record["plan"] = result.plan
            records.append(record)
            if on_row is not None:
                on_row(record)
    return summarise(records), records
