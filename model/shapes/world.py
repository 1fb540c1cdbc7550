"""Drawing the shapes world: six shapes, eight colours, anti-aliased, on square canvases.

The rules are fixed so that anyone can draw inputs for the ``shapes`` model with any program:

* canvases are square (64 px by default), plain light grey (200, 200, 200) unless a task sets another colour;
* shapes are filled solid: circle, square (axis-aligned), triangle (equilateral, pointing up), diamond (a square
  turned 45 degrees), star (5 points, inner radius 0.4 of the outer), cross (a plus sign, arms one third of the
  size wide); the size is the side of the square the shape fills;
* colours are the eight RGB triples of :data:`COLOURS`.

Training rows may be drawn in other shades of those colours (:func:`shade_palette`, a recipe's choice).

Anti-aliasing: a shape is drawn at 4x and area-averaged down, which is also how the evaluation's templates are made.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
    "white": (250, 250, 250),
    "black": (20, 20, 20),
}
GREY: tuple[int, int, int] = (200, 200, 200)
CANVAS = 64
SUPERSAMPLE = 4
SHADE_MARGIN = 40.0  # a shade's least RGB distance from grey and from the other shades of its row
Palette = Mapping[str, tuple[int, int, int]]  # a colour name to the RGB it is drawn in


@dataclass(frozen=True)
class Thing:
    """One object: its shape, colour name, and the box it fills (left, top, width, height) in pixels."""

    shape: str
    colour: str
    box: tuple[float, float, float, float]

    @property
    def centre(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2, y + h / 2


def centred(shape: str, colour: str, size: float, canvas: int = CANVAS) -> Thing:
    """A shape of side ``size`` in the middle of the canvas."""
    off = (canvas - size) / 2
    return Thing(shape, colour, (off, off, size, size))


def outline(shape: str, box: tuple[float, float, float, float]) -> list[tuple[float, float]] | None:
    """The polygon of ``shape`` filling ``box`` (None for the circle, drawn as an ellipse)."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    if shape == "circle":
        return None
    if shape == "square":
        return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    if shape == "triangle":  # equilateral in a square box: full width, height sqrt(3)/2 of it, centred
        th = h * math.sqrt(3) / 2
        top = cy - th / 2
        return [(cx, top), (x + w, top + th), (x, top + th)]
    if shape == "diamond":
        return [(cx, y), (x + w, cy), (cx, y + h), (x, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            r = 0.5 if k % 2 == 0 else 0.2  # outer radius half the size, inner 0.4 of the outer
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + r * w * math.cos(a), cy + r * h * math.sin(a)))
        return pts
    if shape == "cross":
        aw, ah = w / 3, h / 3
        return [
            (cx - aw / 2, y), (cx + aw / 2, y), (cx + aw / 2, cy - ah / 2), (x + w, cy - ah / 2),
            (x + w, cy + ah / 2), (cx + aw / 2, cy + ah / 2), (cx + aw / 2, y + h), (cx - aw / 2, y + h),
            (cx - aw / 2, cy + ah / 2), (x, cy + ah / 2), (x, cy - ah / 2), (cx - aw / 2, cy - ah / 2),
        ]  # fmt: skip
    raise ValueError(f"unknown shape {shape!r}; the world has {', '.join(SHAPES)}")


def _draw(draw: ImageDraw.ImageDraw, thing: Thing, fill, scale: int) -> None:
    box = tuple(v * scale for v in thing.box)
    poly = outline(thing.shape, box)
    if poly is None:
        x, y, w, h = box
        draw.ellipse([x, y, x + w - 1, y + h - 1], fill=fill)
    else:
        draw.polygon(poly, fill=fill)


def render(
    things: list[Thing] | tuple[Thing, ...],
    background: tuple[int, int, int] = GREY,
    canvas: int = CANVAS,
    palette: Palette = COLOURS,
) -> Image.Image:
    """An RGB picture of ``things`` (drawn in order, later ones on top) on a plain background; ``palette`` gives
    each colour name its RGB (training rows may draw a name in another shade of it: :func:`shade_palette`)."""
    big = canvas * SUPERSAMPLE
    img = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(img)
    for thing in things:
        _draw(draw, thing, palette[thing.colour], SUPERSAMPLE)
    return img.resize((canvas, canvas), Image.BOX)


def mask(shape: str, box: tuple[float, float, float, float], canvas: int = CANVAS) -> Image.Image:
    """The anti-aliased coverage ("L", 0..255) of one shape filling ``box``: the evaluation's template."""
    big = canvas * SUPERSAMPLE
    img = Image.new("L", (big, big), 0)
    _draw(ImageDraw.Draw(img), Thing(shape, "white", box), 255, SUPERSAMPLE)
    return img.resize((canvas, canvas), Image.BOX)


def box_picture(box: tuple[float, float, float, float], canvas: int = CANVAS) -> Image.Image:
    """A white box on black: the layout family's reference."""
    big = canvas * SUPERSAMPLE
    img = Image.new("RGB", (big, big), (0, 0, 0))
    x, y, w, h = (v * SUPERSAMPLE for v in box)
    ImageDraw.Draw(img).rectangle([x, y, x + w - 1, y + h - 1], fill=(255, 255, 255))
    return img.resize((canvas, canvas), Image.BOX)


def shade_palette(rng: random.Random) -> dict[str, tuple[int, int, int]]:
    """Each world colour name given a random shade of itself: an RGB triple drawn uniformly from the colours whose
    nearest world colour (grey included) is that one, so a reader that snaps to the palette reads the name, at
    least :data:`SHADE_MARGIN` from grey and from the shades drawn before it."""
    world = {**COLOURS, "grey": GREY}
    drawn: dict[str, tuple[int, int, int]] = {}
    for name in COLOURS:
        while True:
            rgb = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            nearest = min(world, key=lambda n: math.dist(rgb, world[n]))
            if nearest == name and all(math.dist(rgb, c) >= SHADE_MARGIN for c in (GREY, *drawn.values())):
                drawn[name] = rgb
                break
    return drawn
