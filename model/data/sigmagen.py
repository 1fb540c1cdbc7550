"""SIGMA-GEN training rows from annotated pictures: each row is [identity sheet, spatial control, target].

A scene is a picture with per-instance masks (and optionally a depth map and a caption). Its subjects (the largest
instances, up to ``max_subjects``) become the identity sheet (their crops, see
:func:`model.request.multisubject.identity_dictionary`) and the spatial control (routing maps and depth,
:func:`model.request.multisubject.spatial_control`); the picture itself is the target. The training-time choices are
named options (:class:`SigmaGenOptions`): each subject's structure precision is drawn at random from what the data
supports (2-D box, mask, mask + depth), control channels are dropped at random, identity crops are jittered and
flipped, and the two prompt forms alternate. Inputs: COCO-style instance annotations (:func:`coco_scenes`), or the
shapes world's multi-object scenes (:func:`model.shapes.scenes.shapes_scenes`).
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import ROUTING_STEP
from ..errors import InputError
from ..images import open_image, opencv, to_rgb
from ..request.control import Box
from ..request.multisubject import MAX_SUBJECTS, Box3D, Subject, identity_dictionary, regions, spatial_control
from .dataset import Example

log = logging.getLogger(__name__)
PRECISIONS = ("box", "box3d", "mask", "mask_depth")
MIN_TILE, MAX_TILE = 8, 1024  # identity-sheet cell sizes (the model shrinks a reference to a 1024 px long edge)


@dataclass(frozen=True)
class SigmaGenOptions:
    """The conversion's training-time choices (our reading of the SIGMA-GEN paper; each can be changed)."""

    max_subjects: int = MAX_SUBJECTS
    min_area: float = 0.005  # smallest instance kept, as a fraction of the picture
    precision: tuple[str, ...] = PRECISIONS  # drawn per subject among those the scene supports
    channel_drop: float = 0.1  # each spatial-control channel is zeroed with this probability
    crop_jitter: float = 0.1  # identity crops move and grow by up to this fraction of their box
    flip: float = 0.5  # identity crops are mirrored with this probability
    compose_share: float = 0.5  # share of rows whose prompt describes the whole picture
    full_depth: float = 0.0  # share of rows whose structure is the whole scene's depth (the paper's Table 3 variant)
    tile: int = 256
    seed: int = 0
    routing_step: int = ROUTING_STEP  # routing-map levels per subject; the trained model stores the same value

    def __post_init__(self) -> None:
        unknown = sorted(set(self.precision) - set(PRECISIONS))
        if unknown or not self.precision:
            raise InputError(f"--precision {','.join(unknown) or '(none)'}: choose from {', '.join(PRECISIONS)}")
        for name in ("channel_drop", "crop_jitter", "flip", "compose_share", "full_depth", "min_area"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"--{name.replace('_', '-')} must be in [0, 1] (got {getattr(self, name)})")
        if not 1 <= self.routing_step <= 255:
            raise InputError(f"--routing-step must be 1..255 (got {self.routing_step})")
        if not 1 <= self.max_subjects <= MAX_SUBJECTS:
            raise InputError(f"--max-subjects must be 1..{MAX_SUBJECTS} (got {self.max_subjects})")
        if self.max_subjects * self.routing_step > 255:  # subject k is drawn at level k * step, at most 255
            raise InputError(
                f"--routing-step {self.routing_step} cannot tell {self.max_subjects} subjects apart (--max-subjects; "
                f"the routing maps hold 255 levels, so step {self.routing_step} fits {255 // self.routing_step}): "
                f"the largest step that fits {self.max_subjects} subjects is {255 // self.max_subjects}; lower "
                "--routing-step or --max-subjects"
            )
        if not MIN_TILE <= self.tile <= MAX_TILE:
            raise InputError(f"--tile must be {MIN_TILE}..{MAX_TILE} pixels (got {self.tile}): the model sees each "
                             f"reference at {MAX_TILE} px at most; the default is 256")  # fmt: skip


@dataclass
class Instance:
    name: str
    mask: np.ndarray  # bool [H, W], the visible pixels
    box3d: Box3D | None = None  # its 3-D box in camera coordinates, when the data has one


@dataclass
class Scene:
    scene_id: str
    image: Image.Image
    instances: list[Instance]
    depth: np.ndarray | None = None  # uint8 [H, W], brighter = nearer
    caption: str = ""
    extra: dict = field(default_factory=dict)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _crop(scene: Scene, inst: Instance, opts: SigmaGenOptions, rng: random.Random) -> Image.Image:
    """The instance alone (other pixels black), cut at its box moved and grown by up to ``crop_jitter``."""
    h, w = inst.mask.shape
    x0, y0, x1, y1 = _bbox(inst.mask)
    bw, bh = x1 - x0, y1 - y0
    j = opts.crop_jitter
    x0 = max(0, int(x0 - bw * rng.uniform(0, j)))
    y0 = max(0, int(y0 - bh * rng.uniform(0, j)))
    x1 = min(w, int(x1 + bw * rng.uniform(0, j)))
    y1 = min(h, int(y1 + bh * rng.uniform(0, j)))
    pixels = np.asarray(scene.image) * inst.mask[..., None]
    crop = Image.fromarray(pixels[y0:y1, x0:x1].astype(np.uint8))
    return crop.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < opts.flip else crop


def _subject(scene: Scene, inst: Instance, opts: SigmaGenOptions, rng: random.Random) -> Subject:
    supported = {"mask_depth": scene.depth is not None, "box3d": inst.box3d is not None}
    kinds = [k for k in opts.precision if supported.get(k, True)]
    kind = rng.choice(kinds or ["box"])
    crop = _crop(scene, inst, opts, rng)
    if kind == "box":
        return Subject(crop, box=Box(*_bbox(inst.mask)), id=inst.name)
    if kind == "box3d":
        return Subject(crop, box3d=inst.box3d, id=inst.name)
    return Subject(crop, mask=inst.mask, depth=scene.depth if kind == "mask_depth" else None, id=inst.name)


def scene_row(scene: Scene, opts: SigmaGenOptions, rng: random.Random) -> Example:
    """One training row: [identity sheet, spatial control, target] and an instruction in the released data's
    placeholder form (the target, the last image, is not named)."""
    area = scene.image.width * scene.image.height
    kept = sorted((i for i in scene.instances if i.mask.sum() >= opts.min_area * area), key=lambda i: -i.mask.sum())
    kept = kept[: opts.max_subjects]  # the options guarantee the routing maps can tell them apart
    if not kept:
        raise InputError(f"no instance covers {opts.min_area:.1%} of the picture")
    subjects = [_subject(scene, inst, opts, rng) for inst in kept]
    for k, s in enumerate(subjects):  # ids must be unique: two instances of one class are subject 1 and 2
        subjects[k] = Subject(s.image, s.box, s.mask, s.box3d, s.depth, id=f"{k + 1}:{s.id}")
    meta_precisions = [
        "box" if s.box is not None else "box3d" if s.box3d is not None else "mask_depth" if s.depth is not None
        else "mask" for s in subjects
    ]  # fmt: skip
    size = (scene.image.height, scene.image.width)
    whole = scene.depth if scene.depth is not None and rng.random() < opts.full_depth else None
    control = np.asarray(spatial_control(regions(subjects, size, whole), opts.routing_step)).copy()
    for c in range(3):
        if rng.random() < opts.channel_drop:
            control[..., c] = 0
    names = ", ".join(i.name for i in kept)
    caption = scene.caption or f"a picture of {names}"
    compose = rng.random() < opts.compose_share
    text = f"Place these subjects to compose: {caption}" if compose else f"Place these subjects in {caption}"
    instruction = f"<subject>these subjects <image_1> <layout>arranged like <image_2> {text}"
    meta = {"scene": scene.scene_id, "subjects": [i.name for i in kept], "form": "compose" if compose else "place",
            "precision": meta_precisions, "routing_step": opts.routing_step}  # fmt: skip
    sheet = identity_dictionary(subjects, opts.tile)
    return Example("sigmagen", instruction, [sheet, Image.fromarray(control), scene.image], meta | scene.extra)


def rows(scenes: Iterator[Scene | tuple[str, str]], opts: SigmaGenOptions, stats: dict) -> Iterator[Example]:
    """Rows of every usable scene; a scene that cannot be used is skipped, counted in ``stats`` and logged."""
    rng = random.Random(opts.seed)
    for scene in scenes:
        if isinstance(scene, tuple):  # (scene id, why it could not be read)
            stats["skipped"] = stats.get("skipped", 0) + 1
            log.warning("scene %s skipped: %s", *scene)
            continue
        try:
            row = scene_row(scene, opts, rng)
        except InputError as exc:
            stats["skipped"] = stats.get("skipped", 0) + 1
            log.warning("scene %s skipped: %s", scene.scene_id, exc)
            continue
        stats["rows"] = stats.get("rows", 0) + 1
        yield row


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
    """Scenes from a COCO-style instance file: ``images`` (id, file_name), ``annotations`` (image_id, category_id,
    segmentation as polygons or RLE, and optionally ``bbox3d``: see :func:`_box3d`), ``categories`` (id, name), and
    optional ``captions`` (image_id, caption).
    A depth map, when given, is ``DEPTH/<file stem>.png`` (brighter = nearer).

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
    captions = {c["image_id"]: c["caption"] for c in data.get("captions", [])
                if isinstance(c, dict) and _is_id(c.get("image_id")) and isinstance(c.get("caption"), str)}  # fmt: skip
    return _coco_iter(data["images"], by_image, names, captions, Path(images), depth, skipped)


def _coco_iter(infos: list, by_image: dict, names: dict, captions: dict, images: Path, depth, skipped: Counter):
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
            yield (str(info["id"]), str(exc))
            continue
        h, w = image.height, image.width
        instances = []
        for a in by_image.get(info["id"], []):
            try:
                mask = _mask(a, h, w)
            except InputError as exc:
                skipped[str(exc)] += 1
                continue
            cid = a.get("category_id")
            name = names.get(cid, "thing") if _is_id(cid) else "thing"
            instances.append(Instance(name, mask, _box3d(a.get("bbox3d"))))
        yield Scene(str(info["id"]), image, instances, depth_map, captions.get(info["id"], ""))


def _depth_map(depth: str | Path | None, file_name: str, size: tuple[int, int]) -> np.ndarray | None:
    """``DEPTH/<stem>.png`` as uint8 [H, W] (None without one); InputError when it does not fit the picture."""
    if depth is None or not (Path(depth) / f"{Path(file_name).stem}.png").is_file():
        return None
    img = open_image(Path(depth) / f"{Path(file_name).stem}.png")
    if img.size != size:
        raise InputError(f"its depth map is {img.width}x{img.height}, the picture {size[0]}x{size[1]}")
    return np.asarray(img.convert("L"))
