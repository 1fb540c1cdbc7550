"""The shapes world's training-only families: written to ``train/`` when asked for (``make_world``'s ``auxiliary``),
never evaluated. Each is a signal for a skill the five families need but do not teach by themselves.

* **describe** ``In <image_1> the star is red and the circle is blue.``: one to three objects named left to right,
  each shape then its colour, and the same picture as the target. With ``--text-loss`` its words after the picture
  are a recognition signal: naming a shape wherever it stands, and the colour of the one just named (the binding
  that select needs).
* **find** ``Keep only <select>the star <image_1>.``: select's scene, and as the target the named object alone,
  where it stands (every other object painted out). Select asks for two things at once, find the named object and
  draw it elsewhere; find asks for the first alone, in place, where the model copies best (docs/SHAPES.md). Its
  plan (``--plans find``) names the object's place, ``the star is at the top left``, never its colour.
* **boxed** ``Draw a red star placed like <layout>this box <image_1>.``: text's words and layout's box, the object
  filling the box. Layout asks for two things at once, read the reference's shape and draw it away from the centre
  at the box's size; boxed asks for the second alone, the shape given in words (SIGMA-GEN's captions name their
  subjects' shapes too). Its eval and ``seen`` rows, held-out and training pairs, are read like layout's.
"""

from __future__ import annotations

import random

from ..data.dataset import Example
from .draws import layout_box, pair, scatter, scene
from .world import COLOURS, GREY, Palette, Thing, box_picture, render

AUXILIARY: tuple[str, ...] = ("describe", "find", "boxed")


def scene_words(objects) -> str:
    """(shape, colour, box) objects named left to right by their boxes' left edges, each shape then its colour:
    ``the star is red and the circle is blue`` (describe's sentence, and select's scene plan)."""
    return " and ".join(f"the {s} is {c}" for s, c, _ in sorted(objects, key=lambda o: o[2][0]))


def describe(rng: random.Random, split: str, canvas: int) -> Example:
    """One to three objects of training pairs, distinct shapes and colours; a lone one in a layout-sized box."""
    n = rng.choice((1, 2, 3))
    pairs: list[tuple[str, str]] = []
    while len(pairs) < n:
        s, c = pair(rng, split == "eval")
        if all(s != p[0] and c != p[1] for p in pairs):
            pairs.append((s, c))
    if n == 1:
        boxes = [layout_box(rng, canvas)]
    else:
        boxes = scatter(rng, n, canvas)
    things = sorted((Thing(s, c, box) for (s, c), box in zip(pairs, boxes, strict=True)), key=lambda t: t.box[0])
    picture = render(things, canvas=canvas)
    return Example(
        "describe",
        f"In <image_1> {scene_words([(t.shape, t.colour, t.box) for t in things])}.",
        [picture, picture.copy()],
        {"objects": [[t.shape, t.colour, list(t.box)] for t in things], "background": list(GREY)},
    )


def find(rng: random.Random, split: str, canvas: int, paint: Palette = COLOURS, fair: bool = False) -> Example:
    """Select's scene (:func:`~model.shapes.draws.scene`, the same draws), and the named object alone in its box."""
    named, things = scene(rng, split, canvas, fair)
    kept = next(t for t in things if (t.shape, t.colour) == named)
    text = f"Keep only <select>the {named[0]} <image_1>."
    pictures = [render(things, canvas=canvas, palette=paint), render([kept], canvas=canvas, palette=paint)]
    return Example("find", text, pictures, {"shape": kept.shape, "colour": kept.colour, "box": list(kept.box),
                                            "background": list(GREY)})  # fmt: skip


def boxed(rng: random.Random, split: str, canvas: int) -> Example:
    """A named (shape, colour) pair, held out in the eval split as text's, filling a layout box."""
    shape, colour = pair(rng, split == "eval")
    target = Thing(shape, colour, layout_box(rng, canvas))
    text = f"Draw a {colour} {shape} placed like <layout>this box <image_1>."
    return Example("boxed", text, [box_picture(target.box, canvas), render([target], canvas=canvas)],
                   {"shape": shape, "colour": colour, "box": list(target.box), "background": list(GREY)})  # fmt: skip


def place_words(box: tuple[float, float, float, float] | list[float], canvas: int) -> str:
    """Where a box's centre stands on a 3 x 3 grid of the canvas: ``at the top left``, ``at the top``, ``on the
    left``, ``in the middle``, ..."""
    x, y, w, h = box
    col = ("left", "", "right")[min(2, int(3 * (x + w / 2) / canvas))]
    row = ("top", "", "bottom")[min(2, int(3 * (y + h / 2) / canvas))]
    if row:
        return f"at the {row} {col}".rstrip()
    return f"on the {col}" if col else "in the middle"
