"""The shapes world's random draws that every task family shares: (shape, colour) pairs, with :data:`HELD_OUT`
kept for the evaluation, object sizes, and scattered boxes."""

from __future__ import annotations

import random

from .world import COLOURS, SHAPES, Thing

COLOUR_NAMES = tuple(COLOURS)
# One held-out colour per shape on the diagonal, two more for the last colours: each shape and colour is held
# out at least once, and compose rows can be built whose two swapped targets are both held out.
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    [(SHAPES[i], COLOUR_NAMES[i]) for i in range(6)] + [("circle", "white"), ("square", "black")]
)
SIZE = (0.4, 0.6)  # object size as a fraction of the canvas side


def size(rng: random.Random, canvas: int) -> float:
    return round(rng.uniform(*SIZE) * canvas, 1)


def pair(rng: random.Random, held_out: bool, shape: str | None = None, colour: str | None = None):
    """A (shape, colour) pair: a held-out one, or one from the training pairs."""
    pool = [
        (s, c)
        for s in SHAPES
        for c in COLOUR_NAMES
        if ((s, c) in HELD_OUT) == held_out and shape in (None, s) and colour in (None, c)
    ]
    return rng.choice(pool)


def layout_box(rng: random.Random, canvas: int) -> tuple[float, float, float, float]:
    """A square box of 30-60 % of the side anywhere on the canvas: the layout family's (and boxed's)."""
    side = round(rng.uniform(0.3, 0.6) * canvas, 1)
    return round(rng.uniform(0, canvas - side), 1), round(rng.uniform(0, canvas - side), 1), side, side


def scatter(rng: random.Random, n: int, canvas: int) -> list[tuple[float, float, float, float]]:
    """``n`` non-overlapping square boxes of 28-36 % of the side."""
    while True:
        boxes = []
        for _ in range(n):
            s = round(rng.uniform(0.28, 0.36) * canvas, 1)
            boxes.append((round(rng.uniform(1, canvas - s - 1), 1), round(rng.uniform(1, canvas - s - 1), 1), s, s))
        if all(apart(p, q) for k, p in enumerate(boxes) for q in boxes[k + 1 :]):
            return boxes


def apart(p, q, gap: float = 2.0) -> bool:
    left, right = p[0] + p[2] + gap <= q[0], q[0] + q[2] + gap <= p[0]
    above, below = p[1] + p[3] + gap <= q[1], q[1] + q[3] + gap <= p[1]
    return left or right or above or below


def scene(rng: random.Random, split: str, canvas: int, fair: bool = False) -> tuple[tuple[str, str], list[Thing]]:
    """Two or three objects in scattered boxes, distinct shapes and colours, the first drawn (the named one) a
    held-out pair in ``eval``: select's reference, and find's.

    ``fair`` (training scenes only): no other object takes a colour held out with the named shape. Otherwise a
    colour the named shape never has in training (red for "the circle") is seen only on the objects not named, so
    in training it marks an object as not the named one, and at evaluation, where the named object is that
    held-out pair, it points the wrong way (docs/SHAPES.md, "Labels on the reference's tokens")."""
    n = rng.choice((2, 3))
    named = pair(rng, split == "eval")
    pairs = [named]
    while len(pairs) < n:  # distinct shapes and colours, training pairs only
        s, c = pair(rng, False)
        if fair and split == "train" and (named[0], c) in HELD_OUT:
            continue
        if all(s != p[0] and c != p[1] for p in pairs):
            pairs.append((s, c))
    rng.shuffle(pairs)
    return named, [Thing(s, c, box) for (s, c), box in zip(pairs, scatter(rng, n, canvas), strict=True)]
