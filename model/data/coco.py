"""COCO-style instance annotations as SIGMA-GEN scenes (:class:`model.data.scene.Scene`).

A JSON file with ``images`` (id, file_name, optionally ``background_caption``), ``annotations`` (image_id,
category_id, segmentation as polygons or RLE, optionally ``bbox3d`` and ``id``), ``categories`` (id, name) and
optional ``captions`` (image_id, caption, optionally ``background_caption``). The file is checked whole when it is
opened; a malformed annotation is skipped and counted, a picture that cannot be used comes as (scene id, reason).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..images import open_image, opencv, to_rgb
from ..request.multisubject import Box3D
from .scene import Instance, Scene

log = logging.getLogger(__name__)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _polygon_mask(polygons: list, h: int, w: int) -> np.ndarray:
    """COCO polygons ([[x0, y0, x1, y1, ...], ...]) as a bool [h, w] mask; InputError (a short reason) if malformed."""
    if not polygons:
        raise InputError("empty polygon list")
    mask = np.zeros((h, w), dtype=np.uint8)
    limit = 4 * max(h, w)  # far outside the picture: clipped, so the int32 cast cannot wrap around into it
    for poly in polygons:
        if not isinstance(poly, list) or not all(map(_is_number, poly)):
            raise InputError("a polygon is not a list of numbers")
        if len(poly) % 2:
            raise InputError("a polygon has an odd number of coordinates")
        if len(poly) < 6:
            raise InputError("a polygon has fewer than 3 points")
        pts = np.asarray(poly, dtype=np.float64).reshape(-1, 2)  # [points, (x, y)]
        if not np.isfinite(pts).all():
            raise InputError("a polygon has a NaN or infinite coordinate")
        opencv("COCO polygon masks").fillPoly(mask, [pts.clip(-limit, limit).round().astype(np.int32)], 1)
    return mask.astype(bool)


def _rle_mask(rle: dict, h: int, w: int) -> np.ndarray:
    """COCO RLE (uncompressed counts, or compressed with pycocotools) as a bool [h, w] mask; InputError if malformed."""
    size = rle.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        raise InputError("RLE size is not [height, width]")
    if size != [h, w]:
        raise InputError("RLE size is not the picture's [height, width]")
    counts = rle.get("counts")
    if isinstance(counts, list):  # uncompressed RLE, column-major, starting with a run of 0s
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise InputError("RLE counts are not whole numbers >= 0")
        if sum(counts) != h * w:
            raise InputError("RLE counts do not add up to the picture's pixels")
        flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(bool)  # [w * h], column-major
        return flat.reshape(w, h).T
    if not isinstance(counts, (str, bytes)):
        raise InputError("RLE counts are neither a list nor a string")
    try:
        from pycocotools import mask as coco_mask
    except ImportError:
        raise InputError("compressed RLE needs pycocotools (pip install pycocotools)") from None
    try:
        return coco_mask.decode({"size": size, "counts": counts}).astype(bool)
    except Exception:  # noqa: BLE001 - pycocotools raises bare errors for garbage counts
        raise InputError("compressed RLE counts are unreadable") from None


def _mask(annotation: dict, h: int, w: int) -> np.ndarray:
    """An annotation's segmentation as a bool [h, w] mask covering some pixel; InputError (a short reason) if not."""
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, list):
        mask = _polygon_mask(segmentation, h, w)
    elif isinstance(segmentation, dict):
        mask = _rle_mask(segmentation, h, w)
    else:
        raise InputError("no segmentation (polygons or RLE)")
    if not mask.any():
        raise InputError("the segmentation covers no pixel of the picture")
    return mask


def _box3d(value: dict | None) -> Box3D | None:
    """An annotation's optional ``bbox3d``: {"center": [x, y, z], "size": [w, h, d], "yaw": radians, "fov": degrees}
    in camera coordinates (x right, y down, z forward); a malformed one is ignored with a warning."""
    if value is None:
        return None
    try:
        box = Box3D(tuple(map(float, value["center"])), tuple(map(float, value["size"])),
                    float(value.get("yaw", 0.0)), float(value.get("fov", 60.0)))  # fmt: skip
        if len(box.center) != 3 or len(box.size) != 3:
            raise ValueError("center and size take three numbers each")
        box.check("bbox3d")  # finite, positive size, sane extent and field of view
        return box
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("a bbox3d is not {center: [x, y, z], size: [w, h, d], yaw, fov} (%s): ignored", exc)
        return None


def _load_coco(annotations: str | Path) -> dict:
    """The annotation file's JSON, refused (one line) when it is unreadable or not a COCO instance file at all."""
    try:
        data = json.loads(Path(annotations).read_text())
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad UTF-8 or bad JSON
        raise InputError(
            f"--coco {annotations} is not a readable JSON file ({exc}); pass a COCO instance file"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"--coco {annotations} is not a COCO instance file: it needs an 'images' list (with "
                         "'annotations' and 'categories' lists); pass a COCO-style JSON file")  # fmt: skip
    for key in ("annotations", "categories", "captions"):
        if not isinstance(data.get(key, []), list):
            raise InputError(f"--coco {annotations}: '{key}' is not a list; pass a COCO-style JSON file")
    return data


def _is_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def coco_scenes(annotations: str | Path, images: str | Path, depth: str | Path | None = None, skipped=None):
    """Scenes from a COCO-style instance file: ``images`` (id, file_name, optionally ``background_caption``),
    ``annotations`` (image_id, category_id, segmentation as polygons or RLE, and optionally ``bbox3d``: see
    :func:`_box3d`), ``categories`` (id, name), and optional ``captions`` (image_id, caption, optionally
    ``background_caption``: the picture described without its subjects).
    A depth map, when given, is ``DEPTH/<file stem>.png`` (brighter = nearer). Each instance's ``key`` (the stem of
    its prepared identity, ``IDENTITIES/<image id>/<key>.png``) is its annotation's ``id``, or without one its
    position (from 0) among its picture's annotations in the file.

    The file is read and checked here (a file that is not COCO at all raises InputError); the scenes come lazily.
    A malformed annotation or category is skipped and counted in ``skipped`` (a Counter: reason -> count); a
    picture that cannot be used comes as (scene id, reason)."""
    data = _load_coco(annotations)
    skipped = skipped if skipped is not None else Counter()
    names = {}
    for c in data.get("categories", []):
        if isinstance(c, dict) and _is_id(c.get("id")) and isinstance(c.get("name"), str):
            names[c["id"]] = c["name"]
        else:
            skipped["a category without id and name"] += 1
    image_ids = {i.get("id") for i in data["images"] if isinstance(i, dict) and _is_id(i.get("id"))}
    by_image: dict = {}
    for a in data.get("annotations", []):
        image_id = a.get("image_id") if isinstance(a, dict) else None
        if not _is_id(image_id) or image_id not in image_ids:
            skipped["an annotation whose image_id names no image"] += 1
            continue
        by_image.setdefault(image_id, []).append(a)
    texts = _texts(data)
    return _coco_iter(data["images"], by_image, names, texts, Path(images), depth, skipped)


def _texts(data: dict) -> tuple[dict, dict]:
    """(image id -> caption, image id -> background caption) from ``captions`` entries and ``images`` entries."""
    captions, backgrounds = {}, {}
    for c in data.get("captions", []):
        if isinstance(c, dict) and _is_id(c.get("image_id")):
            if isinstance(c.get("caption"), str):
                captions[c["image_id"]] = c["caption"]
            if isinstance(c.get("background_caption"), str) and c["background_caption"].strip():
                backgrounds[c["image_id"]] = c["background_caption"].strip()
    for i in data["images"]:
        if isinstance(i, dict) and _is_id(i.get("id")) and isinstance(i.get("background_caption"), str):
            if i["background_caption"].strip():
                backgrounds[i["id"]] = i["background_caption"].strip()
    return captions, backgrounds


def _coco_iter(infos: list, by_image: dict, names: dict, texts: tuple, images: Path, depth, skipped: Counter):
    captions, backgrounds = texts
    for info in infos:
        if not (isinstance(info, dict) and _is_id(info.get("id")) and isinstance(info.get("file_name"), str)):
            yield (
                str(info.get("id", "?") if isinstance(info, dict) else "?"),
                "an image entry without id and file_name",
            )
            continue
        try:
            image = to_rgb(open_image(images / info["file_name"]))
            depth_map = _depth_map(depth, info["file_name"], image.size)
        except InputError as exc:
            log.warning("picture %s: %s", info["id"], exc)
            yield (str(info["id"]), "its picture or depth map could not be used")
            continue
        instances = []
        for k, a in enumerate(by_image.get(info["id"], [])):
            try:
                mask = _mask(a, image.height, image.width)
            except InputError as exc:
                skipped[str(exc)] += 1
                continue
            cid = a.get("category_id")
            name = names.get(cid, "thing") if _is_id(cid) else "thing"
            key = str(a["id"]) if _is_id(a.get("id")) else str(k)
            instances.append(Instance(name, mask, _box3d(a.get("bbox3d")), key))
        yield Scene(str(info["id"]), image, instances, depth_map, captions.get(info["id"], ""),
                    background_caption=backgrounds.get(info["id"], ""))  # fmt: skip


def _depth_map(depth: str | Path | None, file_name: str, size: tuple[int, int]) -> np.ndarray | None:
    """``DEPTH/<stem>.png`` as uint8 [H, W] (None without one); InputError when it does not fit the picture."""
    if depth is None or not (Path(depth) / f"{Path(file_name).stem}.png").is_file():
        return None
    img = open_image(Path(depth) / f"{Path(file_name).stem}.png")
    if img.size != size:
        raise InputError(f"its depth map is {img.width}x{img.height}, the picture {size[0]}x{size[1]}")
    return np.asarray(img.convert("L"))
