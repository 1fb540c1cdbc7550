"""Reading a picture of the shapes world back by its pixels: the one-object reading of :mod:`.evaluate` and the
mask tools (connected components, dilation, IoU) of the SIGMA-GEN scene reading (:mod:`.scene_reader`).

One object, on a plain background:

* **background**: the median colour of the one-pixel border, snapped to the nearest of grey and the palette;
* **foreground**: pixels further than :data:`FG_DISTANCE` (max over channels) from that background colour;
* **colour**: the median foreground colour, snapped to the nearest palette colour;
* **coverage** (``alpha``): per pixel, how much of that colour lies over the background: the pixel's offset from
  the background projected on the colour's, 0..1. A foreground pixel that no mix of that colour and the background
  explains (off by more than ``FG_DISTANCE`` after the projection: another object) counts 1; pixels within
  ``FG_DISTANCE / 2`` of the background count 0;
* **objects**: how many separate objects the foreground holds (:func:`count_objects`: its largest part, and every
  other part with some pixels of a world colour; faint tints of the background are not objects);
* **shape**: for each shape, its template is placed by the coverage's moments (the same total coverage and centroid:
  both survive a blur) and compared with the coverage (soft IoU: sum of minima over sum of maxima); the best one is
  the shape, if its IoU is at least :data:`SHAPE_FIT`, else there is no shape.

:data:`SHAPE_FIT` is measured on the world's own anti-aliased renderings (every shape and colour, sizes 16-40 px,
any place, grey or coloured backgrounds, 480 pictures): the worst own-template IoU is 0.93 drawn as is, 0.79 after a
0.8 px Gaussian blur and 0.66 after a 1.2 px blur (the star; the other shapes stay above 0.74). 0.6 leaves that
margin, while two objects, a bar or a ring fit no template that well (0.02-0.48).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from .world import COLOURS, GREY, SHAPES, mask

FG_DISTANCE = 28
SHAPE_FIT = 0.6  # a foreground whose best template overlaps it less than this (soft IoU) is "no shape"
MIN_PIXELS = 12  # fewer foreground pixels than this: nothing is drawn
_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"grey": GREY, **COLOURS}


@dataclass(frozen=True)
class Reading:
    """What a picture shows, read by pixels."""

    shape: str | None  # None: nothing drawn, or no template fits the foreground (IoU below SHAPE_FIT)
    colour: str | None
    background: str
    centroid: tuple[float, float] | None
    box: tuple[int, int, int, int] | None  # foreground bounding box (left, top, width, height)
    coverage: float  # share of pixels in the foreground
    iou: float  # the best template's overlap (soft IoU), whether or not it reaches SHAPE_FIT
    fit_box: tuple[float, float, float, float] | None = None  # the square box the best template was drawn in
    objects: int = 0  # separate foreground objects (see :func:`count_objects`)


def nearest_colour(rgb: np.ndarray) -> str:
    return list(COLOURS)[int(np.argmin(((_PALETTE - rgb[None]) ** 2).sum(-1)))]


@lru_cache(maxsize=16)
def _geometry(shape: str) -> tuple[float, float, float]:
    """A shape's area as a share of its square box, and its centroid's offset from the box centre (in sides)."""
    side = 192.0
    m = np.asarray(mask(shape, (32.0, 32.0, side, side), canvas=256), dtype=np.float64) / 255
    ys, xs = np.mgrid[:256, :256] + 0.5
    area = m.sum()
    cx, cy = (m * xs).sum() / area, (m * ys).sum() / area
    return area / side**2, (cx - 128) / side, (cy - 128) / side


def template(shape: str, box, height: int, width: int) -> np.ndarray:
    """The anti-aliased coverage (0..1) of ``shape`` filling ``box`` on a ``height`` x ``width`` picture."""
    return np.asarray(mask(shape, tuple(box), canvas=max(height, width)), dtype=np.float32)[:height, :width] / 255


def soft_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two coverages (0..1 or bool): the sum of the pixel minima over the sum of the maxima."""
    a, b = a.astype(np.float32), b.astype(np.float32)
    return float(np.minimum(a, b).sum() / max(1e-6, float(np.maximum(a, b).sum())))


def fit_template(alpha: np.ndarray, shape: str) -> tuple[float, tuple[float, float, float, float]]:
    """(soft IoU, box) of ``shape`` placed by the moments of ``alpha``: the same total coverage and centroid."""
    h, w = alpha.shape
    area, ox, oy = _geometry(shape)
    total = float(alpha.sum())
    ys, xs = np.mgrid[:h, :w] + 0.5
    cx, cy = float((alpha * xs).sum()) / total, float((alpha * ys).sum()) / total
    side = (total / area) ** 0.5
    box = (cx - ox * side - side / 2, cy - oy * side - side / 2, side, side)
    return soft_iou(alpha, template(shape, box, h, w)), box


def object_alpha(px: np.ndarray, background, colour: str) -> np.ndarray:
    """How much of ``colour`` lies over ``background`` at each pixel (0..1), see the module's notes."""
    diff = px - np.asarray(background, dtype=np.float32)
    v = np.asarray(COLOURS[colour], dtype=np.float32) - np.asarray(background, dtype=np.float32)
    dist = np.abs(diff).max(-1)
    if float(v @ v) < FG_DISTANCE**2:  # the colour is the background's: the foreground itself is all there is
        return (dist > FG_DISTANCE).astype(np.float32)
    alpha = np.clip(diff @ v / float(v @ v), 0.0, 1.0)
    unexplained = np.abs(diff - alpha[..., None] * v).max(-1) > FG_DISTANCE  # no mix of the colour and background
    alpha[unexplained & (dist > FG_DISTANCE)] = 1.0  # another object's pixels count in full
    alpha[dist <= FG_DISTANCE / 2] = 0.0
    return alpha.astype(np.float32)


def read_alpha(img: Image.Image) -> tuple[Reading, np.ndarray]:
    """:func:`read`, and the object's coverage (``alpha``, [H, W] 0..1; zeros when nothing is drawn)."""
    px = np.asarray(img.convert("RGB"), dtype=np.float32)
    h, w, _ = px.shape
    border = np.concatenate([px[0], px[-1], px[:, 0], px[:, -1]])
    bg_rgb = np.median(border, axis=0)
    bg_name = min(BACKGROUNDS, key=lambda k: float(((np.array(BACKGROUNDS[k]) - bg_rgb) ** 2).sum()))
    bg = np.array(BACKGROUNDS[bg_name], dtype=np.float32)
    fg = np.abs(px - bg).max(-1) > FG_DISTANCE
    coverage = float(fg.mean())
    if fg.sum() < MIN_PIXELS:
        return Reading(None, None, bg_name, None, None, coverage, 0.0), np.zeros((h, w), np.float32)
    ys, xs = np.nonzero(fg)
    colour = nearest_colour(np.median(px[fg], axis=0))
    alpha = object_alpha(px, bg, colour)
    box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
    fits = {shape: fit_template(alpha, shape) for shape in SHAPES}
    best = max(SHAPES, key=lambda s: fits[s][0])
    best_iou, fit_box = fits[best]
    reading = Reading(best if best_iou >= SHAPE_FIT else None, colour, bg_name,
                      (float(xs.mean()) + 0.5, float(ys.mean()) + 0.5), box, coverage, best_iou,
                      tuple(round(float(v), 2) for v in fit_box), count_objects(px, fg, bg))  # fmt: skip
    return reading, alpha


def count_objects(px: np.ndarray, fg: np.ndarray, background) -> int:
    """How many separate objects a foreground holds. Its parts are the 8-connected components after a one-pixel
    opening (thin lines and specks go) of :data:`MIN_PIXELS` px or more; the largest is the object, and every other
    part with :data:`MIN_PIXELS` px or more within ``FG_DISTANCE`` of a palette colour (not the background's) is another
    object. A faint tint of the background (no pixel close to a world colour) is no object."""
    parts = [part for part in components(opened(fg)) if part.sum() >= MIN_PIXELS]
    if not parts:
        return 0
    others = _PALETTE[np.abs(_PALETTE - np.asarray(background, np.float32)).max(-1) > FG_DISTANCE]
    solid = (np.abs(px[:, :, None, :] - others[None, None]).max(-1) <= FG_DISTANCE).any(-1)
    return 1 + sum(int((part & solid).sum()) >= MIN_PIXELS for part in parts[1:])


def read(img: Image.Image) -> Reading:
    """Read one picture (any size; it is looked at in RGB)."""
    return read_alpha(img)[0]


def box_iou(a, b) -> float:
    """IoU of two (left, top, width, height) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def bbox(m: np.ndarray) -> tuple[int, int, int, int] | None:
    """The (left, top, width, height) box of a boolean mask's pixels (None when it has none)."""
    if not m.any():
        return None
    ys, xs = np.nonzero(m)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def dilate(m: np.ndarray, steps: int = 1) -> np.ndarray:
    """``m`` grown by ``steps`` pixels (3 x 3 neighbourhood, 8-connected)."""
    out = m.copy()
    for _ in range(steps):
        p = np.pad(out, 1)
        out = np.logical_or.reduce([p[1 + dy : p.shape[0] - 1 + dy, 1 + dx : p.shape[1] - 1 + dx]
                                    for dy in (-1, 0, 1) for dx in (-1, 0, 1)])  # fmt: skip
    return out


def opened(m: np.ndarray) -> np.ndarray:
    """``m`` eroded then dilated by one pixel: lines one or two pixels wide (anti-aliased fringes) vanish."""
    return dilate(~dilate(~m))


def components(m: np.ndarray) -> list[np.ndarray]:
    """The 8-connected components of a boolean mask, each as a boolean mask, largest first."""
    h, w = m.shape
    label = np.zeros((h, w), dtype=np.int32)
    found = []
    for y0, x0 in zip(*np.nonzero(m), strict=True):
        if label[y0, x0]:
            continue
        n = len(found) + 1
        label[y0, x0] = n
        queue, size = deque([(y0, x0)]), 0
        while queue:
            y, x = queue.popleft()
            size += 1
            for ny in (y - 1, y, y + 1):
                for nx in (x - 1, x, x + 1):
                    if 0 <= ny < h and 0 <= nx < w and m[ny, nx] and not label[ny, nx]:
                        label[ny, nx] = n
                        queue.append((ny, nx))
        found.append((size, n))
    return [label == n for _, n in sorted(found, key=lambda t: -t[0])]
