"""The outside check: held-out rows drawn by another program, from the world's written rules alone.

The world's own rows (:mod:`.tasks`) are drawn by :mod:`.world`: PIL polygons at 4x, area-averaged down, the same
code that draws every training picture and the evaluation's templates. A model can learn that renderer's pixels as
well as the world. These rows are what someone else would make from the rules on docs/SHAPES.md ("The world") and
nothing else:

* OpenCV's anti-aliased fills (``cv2.LINE_AA``, sub-pixel coordinates) at the canvas's own resolution, its edges
  as OpenCV rounds them, never the world's supersampling;
* each shape's geometry written again from the rules (a circle filling its square; the square; an equilateral
  triangle pointing up, full width, centred; a diamond touching the box's edge midpoints; a star of 5 points whose
  inner radius is 0.4 of the outer; a plus sign with arms a third of the size wide);
* random draws of their own (numpy's generator; select's scenes 2-3 objects of 25-40 % of the side, kept 3 px apart,
  where the world's are 28-36 % and 2 px apart).

The targets are the held-out pairs, as in ``sigma shapes eval``, and each row's ``meta`` says what its target shows,
so the same pixel reader scores them (``sigma shapes eval --drawn-by opencv``). SIGMA-GEN's held-out scenes keep their
own draws and are drawn by :func:`draw` instead of the world's renderer, masks included
(:func:`.scenes.shapes_scenes` with ``drawn_by="opencv"``; ``sigma sigmagen eval --drawn-by opencv``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, get_args

import cv2
import numpy as np
from PIL import Image

from ..data.dataset import Example, write_parquet
from ..files import write_json
from .draws import HELD_OUT
from .world import CANVAS, COLOURS, GREY, SHAPES

DrawnBy = Literal["world", "opencv"]  # who draws an evaluation's rows: the world's renderer, or this module
DRAWERS: tuple[str, ...] = get_args(DrawnBy)
DRAWN_BY = DRAWERS[1]
SHIFT = 4  # OpenCV's fixed-point bits: coordinates to 1/16 px
Box = tuple[float, float, float, float]
TRAINING = sorted((s, c) for s in SHAPES for c in COLOURS if (s, c) not in HELD_OUT)


def polygon(shape: str, box: Box) -> list[tuple[float, float]]:
    """The corners of a polygonal shape filling ``box`` (x, y, side, side), in canvas coordinates (a pixel k spans
    [k, k + 1)). Written from the rules, apart from :func:`.world.outline`."""
    x, y, s, _ = box
    cx, cy = x + s / 2, y + s / 2
    if shape == "square":
        return [(x, y), (x + s, y), (x + s, y + s), (x, y + s)]
    if shape == "diamond":
        return [(cx, y), (x + s, cy), (cx, y + s), (x, cy)]
    if shape == "triangle":
        half = s * math.sqrt(3) / 4  # half the height of an equilateral triangle of side s
        return [(cx, cy - half), (x + s, cy + half), (x, cy + half)]
    if shape == "star":
        outer = s / 2
        radii = [outer if k % 2 == 0 else 0.4 * outer for k in range(10)]
        return [(cx + r * math.sin(k * math.pi / 5), cy - r * math.cos(k * math.pi / 5)) for k, r in enumerate(radii)]
    if shape == "cross":
        h, a = s / 2, s / 6  # half the size, half an arm's width
        corners = [(-a, -h), (a, -h), (a, -a), (h, -a), (h, a), (a, a), (a, h), (-a, h), (-a, a), (-h, a), (-h, -a)]
        return [(cx + u, cy + v) for u, v in [*corners, (-a, -a)]]
    raise ValueError(f"unknown shape {shape!r}; the world has {', '.join(SHAPES)}")


def draw(objects: list[tuple[str, str | tuple, Box]], background=GREY, canvas: int = CANVAS) -> Image.Image:
    """A picture of (shape, colour, box) objects, later ones on top, by OpenCV's anti-aliased fills; a colour is a
    name of the world's palette or an RGB triple."""
    img = np.zeros((canvas, canvas, 3), np.uint8)
    img[:] = background
    scale = 1 << SHIFT
    # OpenCV centres pixel k on k, the rules' pixel k spans [k, k + 1): half a pixel apart
    fixed = lambda u, v: (round((u - 0.5) * scale), round((v - 0.5) * scale))  # noqa: E731
    for shape, colour, box in objects:
        rgb = tuple(int(v) for v in (COLOURS[colour] if isinstance(colour, str) else colour))
        if shape == "circle":
            x, y, s, _ = box
            cv2.circle(img, fixed(x + s / 2, y + s / 2), round(s / 2 * scale), rgb, -1, cv2.LINE_AA, SHIFT)
        else:
            pts = np.array([fixed(u, v) for u, v in polygon(shape, box)], np.int32)
            cv2.fillPoly(img, [pts], rgb, cv2.LINE_AA, SHIFT)
    return Image.fromarray(img)


def box_map(box: Box, canvas: int = CANVAS) -> Image.Image:
    """Layout's reference: the box in white on black."""
    return draw([("square", (255, 255, 255), box)], background=(0, 0, 0), canvas=canvas)


def coverage(shape: str, box: Box, canvas: int = CANVAS) -> Image.Image:
    """The anti-aliased coverage ("L", 0..255) of one shape filling ``box``, as :func:`draw` draws it."""
    return draw([(shape, (255, 255, 255), box)], background=(0, 0, 0), canvas=canvas).convert("L")


class Draws:
    """The outside check's random draws, from numpy's generator (not the world's ``random.Random``)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def side(self, low: float = 0.4, high: float = 0.6) -> float:
        return round(float(self.rng.uniform(low, high)) * CANVAS, 2)

    def centred(self, side: float | None = None) -> Box:
        s = self.side() if side is None else side
        return ((CANVAS - s) / 2, (CANVAS - s) / 2, s, s)

    def anywhere(self, side: float) -> Box:
        x, y = (round(float(self.rng.uniform(0, CANVAS - side)), 2) for _ in range(2))
        return (x, y, side, side)

    def pick(self, items):
        return items[int(self.rng.integers(len(items)))]

    def held_out(self) -> tuple[str, str]:
        return self.pick(sorted(HELD_OUT))


def _meta(shape: str, colour: str, box: Box, background=GREY, **extra) -> dict:
    return {"shape": shape, "colour": colour, "box": list(box), "background": list(background), **extra}


def compose(d: Draws, pair_id: int) -> list[Example]:
    """Two rows on two references whose swapped targets are both held out: A = (shape i, colour j) and B = (shape j,
    colour i) give A's shape in B's colour (i, i) and B's shape in A's colour (j, j); or the black circle and the
    white square, whose targets are the white circle and the black square."""
    pairs = [(p, q) for p in sorted(HELD_OUT) for q in sorted(HELD_OUT) if p[0] != q[0] and p[1] != q[1]]
    pairs = [(p, q) for p, q in pairs if (p[0], q[1]) not in HELD_OUT and (q[0], p[1]) not in HELD_OUT]
    (si, ci), (sj, cj) = d.pick(pairs)  # the two targets
    a, b = (si, cj), (sj, ci)
    ref_a, ref_b = d.centred(), d.centred()
    a_first = bool(d.rng.integers(2))
    num = {"a": 1 if a_first else 2, "b": 2 if a_first else 1}
    pictures = [draw([(*a, ref_a)]), draw([(*b, ref_b)])]
    pictures = pictures if a_first else pictures[::-1]
    rows = []
    for shape_of, colour_of, target in (("a", "b", (si, ci, ref_a)), ("b", "a", (sj, cj, ref_b))):
        text = f"Draw the <subject>shape <image_{num[shape_of]}> in the <style>colour of <image_{num[colour_of]}>."
        box = d.centred(target[2][2])  # the shape's reference gives its size
        rows.append(Example("compose", text, [*pictures, draw([(target[0], target[1], box)])],
                            _meta(target[0], target[1], box, swap=pair_id)))  # fmt: skip
    return rows


def select(d: Draws) -> Example:
    named = d.held_out()
    objects, n = [named], int(d.rng.integers(2, 4))
    while len(objects) < n:
        s, c = d.pick(TRAINING)
        if all(s != o[0] and c != o[1] for o in objects):
            objects.append((s, c))
    while True:
        boxes = [d.anywhere(d.side(0.25, 0.4)) for _ in objects]
        if all(_apart(p, q) for k, p in enumerate(boxes) for q in boxes[k + 1 :]):
            break
    order = d.rng.permutation(len(objects))
    things = [(*objects[k], boxes[k]) for k in order]
    box = d.centred()
    return Example("select", f"Draw only <select>the {named[0]} <image_1>.", [draw(things), draw([(*named, box)])],
                   _meta(*named, box, objects=[[s, c, list(b)] for s, c, b in things]))  # fmt: skip


def _apart(p: Box, q: Box, gap: float = 3.0) -> bool:
    side_by_side = p[0] + p[2] + gap <= q[0] or q[0] + q[2] + gap <= p[0]
    return side_by_side or p[1] + p[3] + gap <= q[1] or q[1] + q[3] + gap <= p[1]


def layout(d: Draws) -> Example:
    shape, colour = d.held_out()
    box = d.anywhere(d.side(0.3, 0.6))
    obj, boxes = draw([(shape, colour, d.centred())]), box_map(box)
    if d.rng.integers(2):
        text, refs = "Draw the <subject>shape <image_1> placed like <layout>this box <image_2>.", [obj, boxes]
    else:
        text, refs = "Draw the <subject>shape <image_2> placed like <layout>this box <image_1>.", [boxes, obj]
    return Example("layout", text, [*refs, draw([(shape, colour, box)])], _meta(shape, colour, box))


def background(d: Draws) -> Example:
    shape, colour = d.held_out()
    canvas_colour = d.pick([c for c in COLOURS if c != colour])
    rgb = COLOURS[canvas_colour]
    box = d.centred()
    text = "Put the <subject>shape <image_1> on the <background>background of <image_2>."
    pictures = [draw([(shape, colour, box)]), draw([], background=rgb), draw([(shape, colour, box)], background=rgb)]
    return Example("background", text, pictures, _meta(shape, colour, box, rgb))


def text(d: Draws) -> Example:
    shape, colour = d.held_out()
    box = d.centred()
    return Example("text", f"a {colour} {shape}", [draw([(shape, colour, box)])], _meta(shape, colour, box))


def outside_rows(family: str, n: int, seed: int = 0) -> list[Example]:
    """``n`` held-out rows of ``family`` (compose: n rounded up to whole swapped pairs), a pure function of seed."""
    d = Draws(seed + 7919 * (1 + ("compose", "select", "layout", "background", "text").index(family)))
    if family == "compose":
        return [row for k in range((n + 1) // 2) for row in compose(d, k)]
    return [{"select": select, "layout": layout, "background": background, "text": text}[family](d) for _ in range(n)]


def make_outside(out: str | Path, per_family: int, seed: int = 0) -> dict[str, int]:
    """Write ``out/eval/<family>.parquet`` for the five families, and ``out/world.json`` last (it marks the rows as
    complete; ``eval_pairs`` held-out, ``drawn_by`` opencv). Returns the row counts."""
    out = Path(out)
    counts = {}
    for family in ("compose", "select", "layout", "background", "text"):
        rows = outside_rows(family, per_family, seed)
        counts[f"eval/{family}"] = write_parquet(out / "eval" / f"{family}.parquet", iter(rows))
    write_json(out / "world.json", {"eval_pairs": "held-out", "drawn_by": DRAWN_BY, "seed": seed, "counts": counts})
    return counts
