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
from .draws import HELD_OUT, apart
from .tasks import FAMILIES
from .world import CANVAS, COLOURS, GREY, SHAPES, Thing, render

DrawnBy = Literal["world", "opencv"]  # who draws an evaluation's rows: the world's renderer, or this module
DRAWERS: tuple[str, ...] = get_args(DrawnBy)
WORLD, DRAWN_BY = DRAWERS  # the world's own rows (the default), and this module's
SHIFT = 4  # OpenCV's fixed-point bits: coordinates to 1/16 px
WHITE, BLACK = (255, 255, 255), (0, 0, 0)
GAP = 3.0  # px between select's objects (the world's scenes keep 2)
Box = tuple[float, float, float, float]
TRAINING = sorted((s, c) for s in SHAPES for c in COLOURS if (s, c) not in HELD_OUT)


def polygon(shape: str, box: Box) -> list[tuple[float, float]]:
    """The outline of ``shape`` filling ``box`` (x, y, side, side), in canvas coordinates (a pixel k spans [k, k + 1));
    the circle as a polygon of 180 corners. Written from the rules, apart from :func:`.world.outline`."""
    x, y, s, _ = box
    cx, cy = x + s / 2, y + s / 2
    if shape == "circle":  # OpenCV's own circle is a 12- to 20-gon at these radii
        return [(cx + s / 2 * math.cos(a), cy + s / 2 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 180, False)]
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
    """A picture of (shape, colour, box) objects, later ones on top, by OpenCV's anti-aliased fill; a colour is a
    name of the world's palette or an RGB triple. As OpenCV draws it: the fill also strokes the outline anti-aliased,
    so every shape stands about 0.7 px wider on each side than the rules' (a 38 px square covers 7 % more)."""
    img = np.zeros((canvas, canvas, 3), np.uint8)
    img[:] = background
    scale = 1 << SHIFT
    for shape, colour, box in objects:
        rgb = tuple(int(v) for v in (COLOURS[colour] if isinstance(colour, str) else colour))
        # OpenCV centres pixel k on k, the rules' pixel k spans [k, k + 1): half a pixel apart
        pts = np.array([(round((u - 0.5) * scale), round((v - 0.5) * scale)) for u, v in polygon(shape, box)])
        cv2.fillPoly(img, [pts.astype(np.int32)], rgb, cv2.LINE_AA, SHIFT)
    return Image.fromarray(img)


def world_draw(objects: list[tuple[str, str | tuple, Box]], background=GREY, canvas: int = CANVAS) -> Image.Image:
    """The same pictures by the world's renderer (:func:`.world.render`): the outside rows with their pixels the
    world's, to tell what the renderer costs from what the draws do."""
    palette, things = dict(COLOURS), []
    for k, (shape, colour, box) in enumerate(objects):
        if not isinstance(colour, str):
            palette[f"rgb{k}"], colour = tuple(colour), f"rgb{k}"
        things.append(Thing(shape, colour, tuple(box)))
    return render(things, background=tuple(background), canvas=canvas, palette=palette)


RENDERERS = {DRAWN_BY: draw, WORLD: world_draw}  # WORLD here: the outside draws in the world's pixels


def coverage(shape: str, box: Box, canvas: int = CANVAS) -> Image.Image:
    """The anti-aliased coverage ("L", 0..255) of one shape filling ``box``, as :func:`draw` draws it."""
    return draw([(shape, WHITE, box)], background=BLACK, canvas=canvas).convert("L")


class Draws:
    """The outside check's random draws, from numpy's generator (not the world's ``random.Random``), and the renderer
    its pictures are drawn by (``paint``)."""

    def __init__(self, seed: int, paint=draw):
        self.rng, self.paint = np.random.default_rng(seed), paint

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
    pictures = [d.paint([(*a, ref_a)]), d.paint([(*b, ref_b)])]
    pictures = pictures if a_first else pictures[::-1]
    worded_colour_first = bool(d.rng.integers(2))  # the world's two sentences, one a pair
    rows = []
    for shape_of, colour_of, target in (("a", "b", (si, ci, ref_a)), ("b", "a", (sj, cj, ref_b))):
        s, c = num[shape_of], num[colour_of]
        if worded_colour_first:
            text = f"Use the <style>colour of <image_{c}> for the <subject>shape <image_{s}>."
        else:
            text = f"Draw the <subject>shape <image_{s}> in the <style>colour of <image_{c}>."
        box = d.centred(target[2][2])  # the shape's reference gives its size
        rows.append(Example("compose", text, [*pictures, d.paint([(target[0], target[1], box)])],
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
        if all(apart(p, q, GAP) for k, p in enumerate(boxes) for q in boxes[k + 1 :]):
            break
    order = d.rng.permutation(len(objects))
    things = [(*objects[k], boxes[k]) for k in order]
    box, source = d.centred(), next(b for s, c, b in things if (s, c) == named)
    meta = _meta(*named, box, source=list(source), objects=[[s, c, list(b)] for s, c, b in things])
    text = f"Draw only <select>the {named[0]} <image_1>."
    return Example("select", text, [d.paint(things), d.paint([(*named, box)])], meta)


def layout(d: Draws) -> Example:
    shape, colour = d.held_out()
    box = d.anywhere(d.side(0.3, 0.6))
    obj, boxes = d.paint([(shape, colour, d.centred())]), d.paint([("square", WHITE, box)], background=BLACK)
    if d.rng.integers(2):
        text, refs = "Draw the <subject>shape <image_1> placed like <layout>this box <image_2>.", [obj, boxes]
    else:
        text, refs = "Draw the <subject>shape <image_2> placed like <layout>this box <image_1>.", [boxes, obj]
    return Example("layout", text, [*refs, d.paint([(shape, colour, box)])], _meta(shape, colour, box))


def background(d: Draws) -> Example:
    shape, colour = d.held_out()
    canvas_colour = d.pick([c for c in COLOURS if c != colour])
    rgb = COLOURS[canvas_colour]
    box = d.centred()
    text = "Put the <subject>shape <image_1> on the <background>background of <image_2>."
    drawn = [(shape, colour, box)]
    pictures = [d.paint(drawn), d.paint([], background=rgb), d.paint(drawn, background=rgb)]
    return Example("background", text, pictures, _meta(shape, colour, box, rgb))


def text(d: Draws) -> Example:
    shape, colour = d.held_out()
    box = d.centred()
    return Example("text", f"a {colour} {shape}", [d.paint([(shape, colour, box)])], _meta(shape, colour, box))


def outside_rows(family: str, n: int, seed: int = 0, renderer: str = DRAWN_BY) -> list[Example]:
    """``n`` held-out rows of ``family`` (compose: n rounded up to whole swapped pairs), a pure function of seed;
    ``renderer``: one of :data:`RENDERERS` (``world``: the same rows, drawn by the world's renderer)."""
    if renderer not in RENDERERS:
        raise ValueError(f"renderer is one of {', '.join(RENDERERS)}, not {renderer!r}")
    d = Draws(seed + 7919 * (1 + FAMILIES.index(family)), RENDERERS[renderer])
    if family == "compose":
        return [row for k in range((n + 1) // 2) for row in compose(d, k)]
    return [{"select": select, "layout": layout, "background": background, "text": text}[family](d) for _ in range(n)]


def make_outside(out: str | Path, per_family: int, seed: int = 0, renderer: str = DRAWN_BY) -> dict[str, int]:
    """Write ``out/eval/<family>.parquet`` for the five families, and ``out/world.json`` last (it marks the rows as
    complete; ``eval_pairs`` held-out, ``drawn_by`` the renderer). Returns the row counts."""
    out = Path(out)
    counts = {}
    for family in FAMILIES:
        rows = outside_rows(family, per_family, seed, renderer)
        counts[f"eval/{family}"] = write_parquet(out / "eval" / f"{family}.parquet", iter(rows))
    info = {"eval_pairs": "held-out", "drawn_by": renderer, "draws": "outside", "seed": seed, "counts": counts}
    write_json(out / "world.json", info)
    return counts
