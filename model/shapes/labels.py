"""Per-token labels of a shapes-world row's pictures, read from its ``meta``: what a training-only head learns to
read off their latent tokens (``sigma finetune --label-weight``, :mod:`finetune.labels`).

Two label sets, one class per latent token of a reference picture:

* ``shape``: which of the six shapes covers the token (1..6, in :data:`~model.shapes.world.SHAPES` order), or 0
  for the background; the object covering most of the token wins, and a token covered less than
  :data:`MIN_COVER` by every object is background;
* ``named``: 1 where the object the instruction names covers the token, else 0 (select rows only: the one
  family whose words pick one object of a picture).

Why: select asks the drawing to take the colour of the one object its word names, and the flow-matching loss
alone did not teach that binding in any probe (docs/SHAPES.md, "Naming before drawing"). These labels ask the
reference's own tokens to know what they show and whether they are the named object, where the drawing's
attention can find them.

And one of the target's: ``drawn``, the shape the target shows (0..5), on every latent token of the picture being
drawn (the noised target), in every row whose target is one object (its ``meta`` names the ``shape``) and whose
conditions were all kept (none dropped for guidance: the dropped one may be what says the shape). It asks the
drawing's own tokens to know, a few layers up, what they are drawing, wherever that comes from: the words (text,
boxed) or a reference shown elsewhere and at another size (layout), the step the layout family fails on
(docs/SHAPES.md, "Drawing in a box"). ``drawn-colour`` is its twin for the colour (0..7, in
:data:`~model.shapes.world.COLOURS` order), on the same tokens of the same rows: the step select fails on, where the
named object is found in the reference and its colour is not drawn (docs/SHAPES.md, "Fair distractors").

SIGMA-GEN's target shows several subjects, so its tokens are labelled one by one, as a reference's are: ``scene``,
the shape of the subject covering the token (1..6) or 0, and ``scene-colour``, its colour (1..8) or 0, from the
``layers`` of its ``meta`` (a row that dropped a control channel is not labelled: its subjects' places may be what
was dropped). SIGMA-GEN's captions name every subject's shape and colour and its subjects are drawn in the wrong
shape (docs/SIGMAGEN.md): the same missing step as layout's, once a subject.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from ..errors import InputError
from .world import COLOURS, SHAPES, mask

MIN_COVER = 0.3  # least share of a token an object must cover for the token to be labelled as that object
HEADS: dict[str, int] = {  # label set -> classes
    "shape": 1 + len(SHAPES),
    "named": 2,
    "drawn": len(SHAPES),
    "drawn-colour": len(COLOURS),
    "scene": 1 + len(SHAPES),
    "scene-colour": 1 + len(COLOURS),
}
REFERENCE_SETS: tuple[str, ...] = ("shape", "named")  # the label sets of the references' tokens
DRAWN_SETS: tuple[str, ...] = ("drawn", "drawn-colour")  # a one-object target's: one class on every token drawn
SCENE_SETS: tuple[str, ...] = ("scene", "scene-colour")  # a SIGMA-GEN target's: token by token
TARGET_SETS: tuple[str, ...] = DRAWN_SETS + SCENE_SETS  # the tokens being drawn (a row with a condition dropped: none)
Objects = list[tuple[str, str, tuple[float, float, float, float]]]  # (shape, colour, box), in drawing order


def reference_objects(family: str, meta: dict) -> dict[int, tuple[Objects, int | None]]:
    """The objects each labelled reference shows, by image index, with the index of the named one (or None)."""
    if family == "select":
        objects = [(s, c, tuple(box)) for s, c, box in meta["objects"]]
        named = next(k for k, (_, _, box) in enumerate(objects) if list(box) == list(meta["source"]))
        return {0: (objects, named)}
    if family == "background":  # image 0: the object alone, where the target shows it
        return {0: ([(meta["shape"], meta["colour"], tuple(meta["box"]))], None)}
    return {}


def token_grid_labels(objects: Objects, named: int | None, grid: tuple[int, int], canvas: int) -> dict[str, np.ndarray]:
    """The labels of one ``canvas``-px picture of ``objects`` at a ``grid`` of (rows, columns) tokens, each a flat
    int64 array in row-major token order: ``shape`` and ``colour`` (0: no object) and, with ``named``, ``named``."""
    h, w = grid
    cover = []
    for shape, _colour, box in objects:
        m = mask(shape, box, canvas).resize((w, h), Image.BOX)
        cover.append(np.asarray(m, dtype=np.float32) / 255.0)
    seen = np.stack(cover)
    for k in range(len(objects) - 1):  # a later object is drawn over the earlier ones
        seen[k] *= np.prod(1 - np.stack(cover[k + 1 :]), axis=0)
    best, present = seen.argmax(0), seen.max(0) >= MIN_COVER
    shape_ids = np.array([SHAPES.index(s) + 1 for s, _, _ in objects])
    colour_ids = np.array([list(COLOURS).index(c) + 1 for _, c, _ in objects])
    out = {
        "shape": np.where(present, shape_ids[best], 0).astype(np.int64).reshape(-1),
        "colour": np.where(present, colour_ids[best], 0).astype(np.int64).reshape(-1),
    }
    if named is not None:
        out["named"] = (present & (best == named)).astype(np.int64).reshape(-1)
    return out


def row_labels(
    family: str, meta: str, pictures: dict[int, tuple[tuple[int, int], int]], sets: tuple[str, ...] = REFERENCE_SETS
) -> dict[int, dict[str, np.ndarray]]:
    """Every labelled picture of one row: image index -> label set -> flat labels at that image's token grid, for
    the label ``sets`` asked for. ``pictures``: image index -> ((rows, columns) of its latent tokens, its width in
    pixels: the canvas its ``meta`` boxes are drawn on); the last is the target. A row of another family, or without
    ``meta``, gives {}; a ``meta`` that cannot be read raises InputError (the trainer skips and counts the row)."""
    if not meta or not pictures:
        return {}
    try:
        parsed = json.loads(meta)
        found = reference_objects(family, parsed) if set(sets) & set(REFERENCE_SETS) else {}
        drawn = {
            name: (SHAPES.index(parsed["shape"]) if name == "drawn" else list(COLOURS).index(parsed["colour"]))
            for name in DRAWN_SETS
            if name in sets and "shape" in parsed
        }
        wanted = [name for name in SCENE_SETS if name in sets]
        layers = parsed.get("layers") if wanted and not parsed.get("dropped") else None
        subjects = [(t["shape"], t["colour"], tuple(t["box"])) for t in layers or []]
    except (ValueError, KeyError, TypeError, IndexError, StopIteration) as exc:  # JSON, or a field missing or wrong
        raise InputError(f"its meta does not say what its references show ({type(exc).__name__}: {exc})") from None
    out = {
        k: {name: v for name, v in token_grid_labels(objects, named, *pictures[k]).items() if name in sets}
        for k, (objects, named) in found.items()
        if k in pictures
    }
    target = max(pictures)
    (h, w), _ = pictures[target]
    if drawn:
        out.setdefault(target, {}).update({name: np.full(h * w, c, dtype=np.int64) for name, c in drawn.items()})
    if subjects:
        scene = token_grid_labels(subjects, None, *pictures[target])
        out.setdefault(target, {}).update({name: scene["shape" if name == "scene" else "colour"] for name in wanted})
    return {k: v for k, v in out.items() if v}
