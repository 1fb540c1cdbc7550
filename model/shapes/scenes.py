"""The shapes world's multi-object scenes, the input of SIGMA-GEN's converter (:mod:`model.data.sigmagen`): 2-5
things on the grey canvas, later ones drawn on top (nearer), with each thing's visible mask, a depth map and a thin
3-D box whose projection is its 2-D box, a caption naming every thing and one of the background alone."""

from __future__ import annotations

import math
import random

import numpy as np

from ..data.scene import Instance, Scene
from ..request.multisubject import Box3D
from . import outside
from .outside import DRAWERS, WORLD, DrawnBy
from .world import CANVAS, COLOURS, SHAPES, Thing, mask, render

BACKGROUND = "a grey picture"  # the shapes world's background alone: what a background-only prompt says


def _flat_box3d(box: tuple[float, float, float, float], layer: int, layers: int, canvas: int) -> Box3D:
    """A shapes-world thing as a thin 3-D box whose projection is its 2-D box: later things (drawn on top) nearer."""
    fov = 60.0
    f = (canvas / 2) / math.tan(math.radians(fov) / 2)
    z = 4.0 - 2.0 * (layer + 1) / layers  # nearer for later layers: z in [2, 4)
    x, y, w, h = box
    cx, cy = (x + w / 2 - canvas / 2) * z / f, (y + h / 2 - canvas / 2) * z / f
    return Box3D((cx, cy, z), (w * z / f, h * z / f, 0.02), 0.0, fov)


def _drawn(things: list[Thing]):
    return outside.draw([(t.shape, t.colour, t.box) for t in things])


def shapes_scenes(count: int, seed: int = 0, subjects: tuple[int, int] = (2, 5), drawn_by: DrawnBy = WORLD):
    """The shapes world's multi-object scenes: 2-5 things, later ones drawn on top (nearer: brighter depth), each
    instance's mask its visible pixels, with overlaps. Each instance's key (its prepared identity's file stem) is
    its place in the drawing order, from 0; the background caption is "a grey picture" (the canvas alone).
    ``drawn_by="opencv"``: the same scenes drawn by the outside check's renderer (:mod:`.outside`)."""
    if drawn_by not in DRAWERS:
        raise ValueError(f"drawn_by is one of {', '.join(DRAWERS)}, not {drawn_by!r}")
    return _scenes(count, seed, subjects, (render, mask) if drawn_by == WORLD else (_drawn, outside.coverage))


def _scenes(count: int, seed: int, subjects: tuple[int, int], renderer):
    picture, coverage = renderer
    rng = random.Random(seed)
    for n in range(count):
        things = []
        for _ in range(rng.randint(*subjects)):
            side = rng.uniform(0.3, 0.5) * CANVAS
            x, y = rng.uniform(0, CANVAS - side), rng.uniform(0, CANVAS - side)
            things.append(Thing(rng.choice(SHAPES), rng.choice(list(COLOURS)), (x, y, side, side)))
        masks = [np.asarray(coverage(t.shape, t.box)) > 127 for t in things]
        depth = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
        for k, m in enumerate(masks):  # drawn in order: each later thing covers the earlier ones
            depth[m] = int(255 * (k + 1) / len(things))
        visible = [m & ~np.logical_or.reduce(masks[k + 1 :] or [np.zeros_like(m)]) for k, m in enumerate(masks)]
        names = [f"{t.colour} {t.shape}" for t in things]
        boxes = [_flat_box3d(t.box, k, len(things), CANVAS) for k, t in enumerate(things)]
        placed = enumerate(zip(names, visible, boxes, strict=True))
        instances = [Instance(name, m, b, str(k)) for k, (name, m, b) in placed if m.any()]
        caption = "a grey picture of " + ", ".join(f"a {name}" for name in names)
        layers = [{"shape": t.shape, "colour": t.colour, "box": [round(v, 2) for v in t.box]} for t in things]
        yield Scene(f"shapes-{n:06d}", picture(things), instances, depth, caption, {"things": names, "layers": layers},
                    background_caption=BACKGROUND)  # fmt: skip
