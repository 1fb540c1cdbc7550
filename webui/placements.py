"""The placement tables of the layout tab (2-D boxes, 3-D boxes, masks) as plain rows, and the mask editor's
value as a mask picture. Pure functions of their inputs, unit-tested on their own."""

from __future__ import annotations

import numpy as np
from PIL import Image

from sigma_studio.model.errors import InputError

BOX3D_DEFAULT = [0.0, 0.0, 3.0, 0.8, 0.8, 0.8, 20.0]  # a box ahead of the camera, turned a little


def _rows(value, numbers: int, width: int) -> list[list]:
    """A table's plain rows: ``numbers`` numeric columns then text columns, ``width`` in all; rows still being
    edited (a number missing) are left out."""
    if value is None:
        return []
    out = []
    for row in value.values.tolist() if hasattr(value, "values") else list(value):
        row = list(row) + [""] * (width - len(row))
        blank = [v is None or v == "" or (isinstance(v, float) and v != v) for v in row]
        if any(blank[:numbers]):
            continue
        texts = ["" if b else str(v) for v, b in zip(row[numbers:width], blank[numbers:width], strict=True)]
        out.append([float(v) for v in row[:numbers]] + texts)
    return out


def box_rows(value) -> list[list]:
    """The boxes table as plain rows [x0, y0, x1, y1, label, reference] (a DataFrame, an array or None)."""
    return _rows(value, 4, 6)


def box3d_rows(value) -> list[list]:
    """The 3-D boxes table as rows [cx, cy, cz, w, h, d, yaw°, label, reference]."""
    return _rows(value, 7, 9)


def mask_rows(value) -> list[list]:
    """The masks table as rows [mask file, label, reference]."""
    return [row for row in _rows(value, 0, 3) if row[0]]


def editor_mask(value) -> Image.Image:
    """A subject mask (L, 0/255) from the mask editor: what was drawn (any opaque stroke), or an uploaded mask
    picture (its light pixels), or both."""
    value = value or {}
    layers = [np.asarray(x) for x in (value.get("layers") or []) if x is not None]
    background = value.get("background")
    mask = None
    for layer in layers:
        drawn = layer[..., 3] > 0 if layer.ndim == 3 and layer.shape[2] == 4 else np.asarray(layer).max(-1) > 127
        mask = drawn if mask is None else mask | drawn
    if background is not None:
        light = np.asarray(Image.fromarray(np.asarray(background).astype(np.uint8)).convert("L")) > 127
        mask = light if mask is None else mask | light
    if mask is None or not mask.any():
        raise InputError("The mask is empty: draw the subject's area in the mask editor (or upload a mask) first")
    return Image.fromarray(mask.astype(np.uint8) * 255)


EDITOR_SIDE = 256  # the mask editor's long edge in pixels (a drawn mask is resized to the output, aspect kept)
EDITOR_LABEL = "mask: draw the subject's area in white (or upload a mask)"


def black_canvas(width: int = EDITOR_SIDE, height: int = EDITOR_SIDE) -> dict:
    """A mask editor value: a black picture of that size to draw the subject on in white, nothing drawn yet."""
    return {"background": np.zeros((height, width, 3), dtype=np.uint8), "layers": [], "composite": None}


def editor_for_output(value, size_hw: tuple[int, int] | None) -> dict | None:
    """A fresh black canvas with the output's aspect (long edge ``EDITOR_SIDE``) when the editor's picture has
    another one and nothing is drawn on it yet; None leaves the editor alone (strokes are never thrown away, and
    an uploaded mask says its own shape). ``size_hw`` None: the output is square."""
    value = value or {}
    if any(np.asarray(layer)[..., -1].any() for layer in value.get("layers") or [] if layer is not None):
        return None
    background = value.get("background")
    h, w = size_hw or (1, 1)
    if background is not None:
        picture = np.asarray(background)
        bh, bw = picture.shape[:2]
        lit = picture[..., :3].any() if picture.ndim == 3 else picture.any()  # (an opaque alpha channel is not lit)
        if lit or abs(bw / bh - w / h) <= 0.01 * w / h:
            return None  # an uploaded mask, or already the right shape
    scale = EDITOR_SIDE / max(w, h)
    return black_canvas(max(1, round(w * scale)), max(1, round(h * scale)))


def remap_box_refs(rows, mapping: dict[int, int | None], parse=box_rows) -> list[list]:
    """Follow slot renumbering (remove / move) in a placement table's reference column (its last: the boxes',
    the 3-D boxes' with ``parse=box3d_rows``, the masks' with ``mask_rows``); None drops the reference."""
    out = []
    for row in parse(rows):
        ref = row[-1]
        if ref.startswith("img") and ref[3:].isdigit() and int(ref[3:]) in mapping:
            new = mapping[int(ref[3:])]
            row[-1] = f"img{new}" if new else ""
        out.append(row)
    return out


def remap_placements(tables: tuple, mapping: dict[int, int | None]) -> list[list[list]]:
    """The boxes, 3-D boxes and masks tables after a slot renumbering."""
    parsers = (box_rows, box3d_rows, mask_rows)
    return [remap_box_refs(t, mapping, parse) for t, parse in zip(tables, parsers, strict=True)]
