"""Reading a SIGMA-GEN picture of the shapes world as a whole, against the scene its row describes.

A row's meta lists the things in drawing order (later ones are nearer and cover earlier ones) with shape, colour and
box, so every thing's **expected visible pixels** are known: its template (:func:`.world.mask` > 127) minus what the
things drawn after it cover. The meta's ``subjects`` / ``precision`` say how each subject was placed: by a mask
(``mask``, ``mask_depth``) or by a box (``box``, ``box3d``; rows without them: by a box).

The picture is read whole:

1. every pixel is named by its nearest colour among the world's eight and the grey background;
2. the **objects** of a colour are the 8-connected components of its pixels after a one-pixel opening (which removes
   the one- or two-pixel fringes anti-aliasing leaves between two colours), of :data:`MIN_OBJECT` px or more;
3. an object that touches (within one pixel) no expected visible pixel of a thing of its colour is a **stray**: the
   subject drawn twice, or drawn outside its region, or something that is not in the scene;
4. a subject's **drawn pixels** are the pixels of its colour within one pixel of its expected visible pixels (thin
   slivers included), and those in (one pixel around) every object that touches them; an object that touches two
   things of its colour is split between them by nearness.

Per subject (subjects with under a quarter of their area, or 30 px, visible are not scored):

* **colour**: the majority colour over its expected visible pixels is its own;
* **shape**: the best of the six templates in its box (minus what nearer things cover) against its drawn pixels is its
  own shape, with IoU >= :data:`SHAPE_FIT`;
* **place**: its drawn pixels overlap its expected visible pixels with IoU >= :data:`PLACE_IOU` (placed by a mask),
  or their bounding box overlaps that of the expected pixels with IoU >= :data:`PLACE_IOU` (placed by a box);
* **alone**: no stray object has its colour;
* it is **right** when all four hold.

An object of a colour no scored subject has, at least half of it outside every thing's expected visible pixels
(grown by one pixel), is an **extra** object of the scene (one inside a thing's pixels is that thing's wrong colour:
its drawn pixels and its colour majority miss it). A scene is all right when every scored subject is right and it
has no extra object. Ordering: for every pair that overlaps by 20 px or more, with different colours, the overlap
must show the nearer thing's colour. Where two things of one colour overlap, the pixels cannot tell which is which:
the split by nearness is a guess.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .reader import bbox, box_iou, components, dilate, opened
from .world import CANVAS, COLOURS, GREY, SHAPES, mask

NAMES = (*COLOURS, "grey")
PALETTE = np.array([*COLOURS.values(), GREY], dtype=np.float32)
MIN_VISIBLE = (0.25, 30)  # share of the thing's area, and pixels
MIN_OVERLAP = 20
MIN_OBJECT = 12  # px: a smaller component (after the opening) is noise, not an object
PLACE_IOU = 0.5
SHAPE_FIT = 0.5  # the own template must overlap the drawn pixels at least this much (IoU), see docs/SIGMAGEN.md
MASK_PLACED = ("mask", "mask_depth")


def colour_names(img: Image.Image, canvas: int = CANVAS) -> np.ndarray:
    """[H, W] index into NAMES of each pixel's nearest colour (the picture looked at ``canvas`` px square)."""
    px = np.asarray(img.convert("RGB").resize((canvas, canvas), Image.BILINEAR), dtype=np.float32)
    return ((px[:, :, None, :] - PALETTE[None, None]) ** 2).sum(-1).argmin(-1)


def expected(layers: list[dict], canvas: int = CANVAS) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each thing's template and what the things drawn after it cover."""
    masks = [np.asarray(mask(t["shape"], tuple(t["box"]), canvas=canvas)) > 127 for t in layers]
    covered = [np.logical_or.reduce(masks[k + 1 :]) if k + 1 < len(masks) else np.zeros_like(masks[k])
               for k in range(len(masks))]  # fmt: skip
    return masks, covered


def placements(meta: dict | None, layers: list[dict], visible: list[np.ndarray]) -> list[str]:
    """How each thing was placed ("mask" or "box"), from the meta's ``subjects`` and ``precision`` (in the order
    the row kept them: the largest visible first, so a name shared by two things goes to the larger first)."""
    out = ["box"] * len(layers)
    subjects, precision = (meta or {}).get("subjects"), (meta or {}).get("precision")
    if not (isinstance(subjects, list) and isinstance(precision, list) and len(subjects) == len(precision)):
        return out
    names = [f"{t['colour']} {t['shape']}" for t in layers]
    taken: set[int] = set()
    for name, kind in zip(subjects, precision, strict=True):
        candidates = [k for k in range(len(layers)) if names[k] == name and k not in taken]
        if candidates:
            k = max(candidates, key=lambda k: int(visible[k].sum()))
            taken.add(k)
            out[k] = "mask" if kind in MASK_PLACED else "box"
    return out


def _nearest(things: list[int], visible: list[np.ndarray]) -> np.ndarray:
    """[H, W] the thing (of ``things``) whose visible pixels are nearest (grown a pixel at a time; -1: none)."""
    owner = np.full(visible[things[0]].shape, -1)
    for k in things:
        owner[visible[k] & (owner < 0)] = k
    while (owner < 0).any():
        grown = False
        for k in things:
            new = dilate(owner == k) & (owner < 0)
            owner[new] = k
            grown |= bool(new.any())
        if not grown:
            break
    return owner


def read_colour(names: np.ndarray, colour: int, things: list[int], visible: list[np.ndarray]):
    """The drawn pixels of each thing of one colour ({thing: mask}) and that colour's stray objects."""
    pixels = names == colour
    near = {k: dilate(visible[k]) for k in things}
    drawn = {k: pixels & near[k] & ~_union([visible[j] for j in things if j != k], pixels) for k in things}
    strays = []
    for obj in _objects(pixels):
        touched = [k for k in things if (obj & near[k]).any()]
        if not touched:
            strays.append(obj)
            continue
        region = pixels & dilate(obj)  # the object's pixels, with the edges the opening took off
        owner = _nearest(touched, visible) if len(touched) > 1 else None
        for k in touched:
            drawn[k] |= region if owner is None else region & (owner == k)
    return drawn, strays


def _union(masks: list[np.ndarray], like: np.ndarray) -> np.ndarray:
    return np.logical_or.reduce(masks) if masks else np.zeros_like(like)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def judge(k: int, thing: dict, names, drawn, visible, covered, placed_by: str, alone: bool, canvas: int) -> dict:
    """The verdict of one scored subject (see the module's notes)."""
    want = NAMES.index(thing["colour"])
    colour_ok = int(np.bincount(names[visible].ravel(), minlength=len(NAMES)).argmax()) == want
    seen = drawn & ~covered
    fits = {s: _iou((np.asarray(mask(s, tuple(thing["box"]), canvas=canvas)) > 127) & ~covered, seen) for s in SHAPES}
    best = max(SHAPES, key=lambda s: fits[s])
    if placed_by == "mask":
        place_iou = _iou(drawn, visible)
    else:
        got = bbox(drawn)
        place_iou = 0.0 if got is None else box_iou(got, bbox(visible))
    verdict = {"thing": k, "scored": True, "colour": colour_ok, "shape": best == thing["shape"]
               and fits[best] >= SHAPE_FIT, "place": place_iou >= PLACE_IOU, "alone": alone}  # fmt: skip
    verdict["ok"] = all(verdict[key] for key in ("colour", "shape", "place", "alone"))
    return {**verdict, "placed_by": placed_by, "shape_iou": round(fits[thing["shape"]], 3),
            "place_iou": round(place_iou, 3)}  # fmt: skip


def score_scene(img: Image.Image, layers: list[dict], canvas: int = CANVAS, meta: dict | None = None) -> dict:
    """Per-subject verdicts, per-pair ordering verdicts and the extra objects of one generated picture. ``meta``:
    the row's meta, for how each subject was placed (by a box when absent)."""
    names = colour_names(img, canvas)
    masks, covered = expected(layers, canvas)
    visible = [m & ~c for m, c in zip(masks, covered, strict=True)]
    placed_by = placements(meta, layers, visible)
    colours = [NAMES.index(t["colour"]) for t in layers]
    drawn, strays = [np.zeros_like(names, dtype=bool)] * len(layers), {}
    for colour in sorted(set(colours)):
        things = [k for k in range(len(layers)) if colours[k] == colour]
        got, strays[colour] = read_colour(names, colour, things, visible)
        for k in things:
            drawn[k] = got[k]
    subjects, wanted = [], set()
    for k, thing in enumerate(layers):
        if visible[k].sum() < max(MIN_VISIBLE[0] * masks[k].sum(), MIN_VISIBLE[1]):
            subjects.append({"thing": k, "scored": False})
            continue
        wanted.add(colours[k])
        alone = not strays[colours[k]]
        subjects.append(judge(k, thing, names, drawn[k], visible[k], covered[k], placed_by[k], alone, canvas))
    scene = dilate(_union(visible, names.astype(bool)))
    unwanted = [o for c in range(len(COLOURS)) if c not in wanted for o in strays.get(c, _objects(names == c))]
    extras = sum(2 * int((o & ~scene).sum()) >= int(o.sum()) for o in unwanted)
    pairs = []
    for i in range(len(layers)):
        for j in range(i + 1, len(layers)):
            overlap = masks[i] & masks[j] & ~covered[j]
            if overlap.sum() >= MIN_OVERLAP and colours[i] != colours[j]:
                shown = int(np.bincount(names[overlap], minlength=len(NAMES)).argmax())
                pairs.append({"behind": i, "front": j, "ok": shown == colours[j]})
    return {"subjects": subjects, "pairs": pairs, "extras": extras}


def _objects(pixels: np.ndarray) -> list[np.ndarray]:
    """The objects of one colour's pixels: components after the opening, of MIN_OBJECT px or more."""
    return [o for o in components(opened(pixels)) if o.sum() >= MIN_OBJECT]
