"""SIGMA-GEN training rows from annotated pictures: each row is [identity sheet, spatial control, target].

A scene is a picture with per-instance masks (and optionally a depth map and a caption). Its subjects (the largest
instances, up to ``max_subjects``) become the identity sheet (their crops, see
:func:`model.multisubject.identity_dictionary`) and the spatial control (routing maps and depth,
:func:`model.multisubject.spatial_control`); the picture itself is the target. The training-time choices are named
options (:class:`SigmaGenOptions`): each subject's structure precision is drawn at random from what the data
supports (2-D box, mask, mask + depth), control channels are dropped at random, identity crops are jittered and
flipped, and the two prompt forms alternate. Inputs: COCO-style instance annotations (:func:`coco_scenes`), or the
shapes world's multi-object scenes (:func:`shapes_scenes`).
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .config import ROUTING_STEP
from .control import Box, _cv2
from .errors import InputError
from .images import open_image, to_rgb
from .multisubject import MAX_SUBJECTS, Box3D, Subject, identity_dictionary, regions, spatial_control
from .shapes.tasks import Example

log = logging.getLogger(__name__)
PRECISIONS = ("box", "box3d", "mask", "mask_depth")


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
    kept = kept[: min(opts.max_subjects, 255 // opts.routing_step)]  # as many as the routing maps can tell apart
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


def _polygons(segmentation, h: int, w: int) -> np.ndarray | None:
    """A COCO polygon list or uncompressed RLE as a bool mask (None for compressed RLE without pycocotools)."""
    mask = np.zeros((h, w), dtype=np.uint8)
    if isinstance(segmentation, list):
        for poly in segmentation:
            pts = np.asarray(poly, dtype=np.float32).reshape(-1, 2).round().astype(np.int32)
            _cv2().fillPoly(mask, [pts], 1)
        return mask.astype(bool)
    counts = segmentation.get("counts")
    if isinstance(counts, list):  # uncompressed RLE, column-major
        flat = np.zeros(h * w, dtype=np.uint8)
        pos, value = 0, 0
        for run in counts:
            flat[pos : pos + run] = value
            pos, value = pos + run, 1 - value
        return flat.reshape(w, h).T.astype(bool)
    try:
        from pycocotools import mask as coco_mask
    except ImportError:
        return None
    return coco_mask.decode(segmentation).astype(bool)


def _box3d(value: dict | None) -> Box3D | None:
    """An annotation's optional ``bbox3d``: {"center": [x, y, z], "size": [w, h, d], "yaw": radians, "fov": degrees}
    in camera coordinates (x right, y down, z forward); a malformed one is ignored with a warning."""
    if value is None:
        return None
    try:
        return Box3D(tuple(map(float, value["center"])), tuple(map(float, value["size"])),
                     float(value.get("yaw", 0.0)), float(value.get("fov", 60.0)))  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("a bbox3d is not {center: [x, y, z], size: [w, h, d], yaw, fov} (%s): ignored", exc)
        return None


def coco_scenes(annotations: str | Path, images: str | Path, depth: str | Path | None = None):
    """Scenes from a COCO-style instance file: ``images`` (id, file_name), ``annotations`` (image_id, category_id,
    segmentation as polygons or RLE, and optionally ``bbox3d``: see :func:`_box3d`), ``categories`` (id, name), and
    optional ``captions`` (image_id, caption).
    A depth map, when given, is ``DEPTH/<file stem>.png`` (brighter = nearer)."""
    try:
        data = json.loads(Path(annotations).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{annotations} is not a readable COCO annotation file ({exc})") from None
    names = {c["id"]: c["name"] for c in data.get("categories", [])}
    by_image: dict = {}
    for a in data.get("annotations", []):
        by_image.setdefault(a["image_id"], []).append(a)
    captions = {c["image_id"]: c["caption"] for c in data.get("captions", [])}
    for info in data.get("images", []):
        path = Path(images) / info["file_name"]
        try:
            image = to_rgb(open_image(path))
        except InputError as exc:
            yield (str(info.get("id")), str(exc))
            continue
        h, w = image.height, image.width
        instances = []
        for a in by_image.get(info["id"], []):
            mask = _polygons(a.get("segmentation", []), h, w)
            if mask is not None and mask.any():
                instances.append(Instance(names.get(a.get("category_id"), "thing"), mask, _box3d(a.get("bbox3d"))))
        depth_map = None
        if depth is not None and (Path(depth) / f"{Path(info['file_name']).stem}.png").is_file():
            depth_map = np.asarray(open_image(Path(depth) / f"{Path(info['file_name']).stem}.png").convert("L"))
        yield Scene(str(info["id"]), image, instances, depth_map, captions.get(info["id"], ""))


def _flat_box3d(box: tuple[float, float, float, float], layer: int, layers: int, canvas: int) -> Box3D:
    """A shapes-world thing as a thin 3-D box whose projection is its 2-D box: later things (drawn on top) nearer."""
    fov = 60.0
    f = (canvas / 2) / math.tan(math.radians(fov) / 2)
    z = 4.0 - 2.0 * (layer + 1) / layers  # nearer for later layers: z in [2, 4)
    x, y, w, h = box
    cx, cy = (x + w / 2 - canvas / 2) * z / f, (y + h / 2 - canvas / 2) * z / f
    return Box3D((cx, cy, z), (w * z / f, h * z / f, 0.02), 0.0, fov)


def shapes_scenes(count: int, seed: int = 0, subjects: tuple[int, int] = (2, 5)):
    """The shapes world's multi-object scenes: 2-5 things, later ones drawn on top (nearer: brighter depth), each
    instance's mask its visible pixels, with overlaps."""
    from .shapes.world import CANVAS, COLOURS, SHAPES, Thing, mask, render

    rng = random.Random(seed)
    for n in range(count):
        things = []
        for _ in range(rng.randint(*subjects)):
            side = rng.uniform(0.3, 0.5) * CANVAS
            x, y = rng.uniform(0, CANVAS - side), rng.uniform(0, CANVAS - side)
            things.append(Thing(rng.choice(SHAPES), rng.choice(list(COLOURS)), (x, y, side, side)))
        masks = [np.asarray(mask(t.shape, t.box)) > 127 for t in things]
        depth = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
        for k, m in enumerate(masks):  # drawn in order: each later thing covers the earlier ones
            depth[m] = int(255 * (k + 1) / len(things))
        visible = [m & ~np.logical_or.reduce(masks[k + 1 :] or [np.zeros_like(m)]) for k, m in enumerate(masks)]
        names = [f"{t.colour} {t.shape}" for t in things]
        boxes = [_flat_box3d(t.box, k, len(things), CANVAS) for k, t in enumerate(things)]
        instances = [Instance(name, m, b) for name, m, b in zip(names, visible, boxes, strict=True) if m.any()]
        caption = "a grey picture of " + ", ".join(f"a {name}" for name in names)
        layers = [{"shape": t.shape, "colour": t.colour, "box": [round(v, 2) for v in t.box]} for t in things]
        yield Scene(f"shapes-{n:06d}", render(things), instances, depth, caption, {"things": names, "layers": layers})
