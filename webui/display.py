"""What the page shows: messages in browser words (escaped, no server paths), the box canvas, the routing map.

Pure functions of their inputs (no Gradio), unit-tested on their own.
"""

from __future__ import annotations

import html
import math
import re

import numpy as np
from PIL import Image, ImageDraw

from sigma_studio.model.config import ROUTING_STEP
from sigma_studio.model.images import PICTURE_FORMATS
from sigma_studio.model.request.control import PALETTE

# CLI wording -> what the page calls the same thing
_OPTION_WORDS = {
    "--size": "the size",
    "--steps": "steps",
    "--cfg-text": "text guidance",
    "--cfg-img": "image guidance",
    "--cfg-interval": "the guidance interval",
    "--renorm-min": "the renorm minimum",
    "--renorm": "renorm",
    "--shift": "the timestep shift",
    "--seed": "the seed",
    "--canny": "the Canny image",
    "--canny-blur": "the Canny blur",
    "--depth-map": "a ready depth map",
    "--depth": "the depth image",
    "--box": "a box",
    "--layout": "the layout",
}
NOTE = "Note: "  # the start of a message that informs (error_html)
CANVAS_SIDE = 512  # pixels of the box canvas (boxes are stored as fractions of the picture)
CAPTION_PX = 22  # type size of a box's caption on the canvas
_PASS_IMAGE = re.compile(r"pass --image (img\d+)=FILE")
_PASS_WITH = re.compile(r"\bpass ((?:a|an|the) [^,;:()]+?) with --[a-z][a-z-]*")  # "pass a ready depth map with --x"
_OPTION = re.compile(r"--[a-z][a-z-]*")
_PATH = re.compile(r"(?:/[^\s/:;,()'\"]+)+/([^\s/:;,()'\"]+)")


def browser_text(message: str) -> str:
    """A toolkit message as the page should say it: upload instead of --image, setting names instead of options,
    file names instead of server paths. Plain text (escape it for HTML)."""
    text = _PASS_IMAGE.sub(r"upload an image into \1", message)
    text = text.replace("; pass --image", "; upload it")
    text = _PASS_WITH.sub(r"upload \1", text)  # the thing is named already: the option's words would say it twice
    text = _OPTION.sub(lambda m: _OPTION_WORDS.get(m.group(0), m.group(0)), text)
    return _PATH.sub(r"\1", text)


def error_html(message: str | None) -> str:
    """The page's one error box: escaped text (``<img5>`` stays visible), or nothing. A message that starts with
    "Note: " (a downscaled upload) is information, not an error, and is shown as such."""
    if not message:
        return ""
    if message.startswith(NOTE):
        return f'<div class="sigma-note" role="status">ℹ {html.escape(browser_text(message))}</div>'
    return f'<div class="sigma-error" role="alert">⚠ {html.escape(browser_text(message))}</div>'


def canvas_image(
    rows: list[list],
    side: int,
    corner: tuple[float, float] | None = None,
    boxes3d: list[list] = (),
    masks: list[list] = (),
    background: str | None = None,
) -> Image.Image:
    """The placement canvas: every 2-D box outlined in its colour with its label and reference, every 3-D box as
    its projected wireframe (the 60° camera of ``Box3D``), every mask tinted in its colour, and the first corner
    of the box being drawn marked with a cross. ``rows`` are [x0, y0, x1, y1 (0..1), label, reference];
    ``boxes3d`` [cx, cy, cz, w, h, d, yaw°, label, reference]; ``masks`` [file, label, reference]. Colours follow
    the subject order of the request: 2-D boxes, then 3-D boxes, then masks. ``background`` (a picture's path)
    is drawn faded under them, stretched to the canvas as the boxes' fractions are."""
    canvas = _backdrop(background, side)
    mask_colours = [PALETTE[(len(rows) + len(boxes3d) + k) % len(PALETTE)] for k in range(len(masks))]
    for row, colour in zip(masks, mask_colours, strict=True):
        _tint(canvas, row[0], colour)
    draw = ImageDraw.Draw(canvas)
    width = max(2, side // 128)
    for i, row in enumerate(rows):
        x0, y0, x1, y1 = (float(v) * side for v in row[:4])
        colour = PALETTE[i % len(PALETTE)]
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=width)
        _caption(draw, (x0, y0), row[4:6], colour)
    for k, row in enumerate(boxes3d):
        colour = PALETTE[(len(rows) + k) % len(PALETTE)]
        points = wireframe(row[:7], side)
        if points is None:  # behind the camera: nothing to draw
            continue
        for a, b in _EDGES:
            draw.line([tuple(points[a]), tuple(points[b])], fill=colour, width=width)
        _caption(draw, tuple(points.min(axis=0)), row[7:9], colour)
    for k, (row, colour) in enumerate(zip(masks, mask_colours, strict=True)):
        _caption(draw, (4, 4 + (CAPTION_PX + 8) * k), [row[1] or "mask", row[2]], colour)
    if corner is not None:
        cx, cy = corner
        r = max(4, side // 40)
        draw.line([cx - r, cy, cx + r, cy], fill=(20, 20, 20), width=2)
        draw.line([cx, cy - r, cx, cy + r], fill=(20, 20, 20), width=2)
    return canvas


_EDGES = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]  # the cube's 12 edges


def wireframe(values: list[float], side: int) -> np.ndarray | None:
    """The 8 corners of a 3-D box [cx, cy, cz, w, h, d, yaw°] projected on a square canvas of ``side`` pixels
    ([8, 2], corner k = (±w, ±h, ±d) with bits 4, 2, 1), or None when a corner is behind the camera."""
    from sigma_studio.model.request.multisubject import Box3D

    box = Box3D(tuple(values[:3]), tuple(values[3:6]), math.radians(values[6]))
    pts = box.corners()
    if (pts[:, 2] <= 0.05).any():
        return None
    f = (side / 2) / math.tan(math.radians(box.fov) / 2)
    return np.stack([pts[:, 0] * f / pts[:, 2] + side / 2, pts[:, 1] * f / pts[:, 2] + side / 2], axis=1)


def _backdrop(path: str | None, side: int) -> Image.Image:
    """The canvas's ground: the background picture faded toward white, or plain grey (also for a file that is no
    picture: the input refuses it on its own)."""
    plain = Image.new("RGB", (side, side), (235, 235, 235))
    if not path:
        return plain
    try:
        with Image.open(path, formats=PICTURE_FORMATS) as picture:
            picture.draft("RGB", (side, side))  # a large JPEG decodes at a fraction of its size
            ground = picture.convert("RGB").resize((side, side), Image.BILINEAR)
    except (OSError, ValueError, Image.DecompressionBombError):
        return plain
    return Image.blend(ground, Image.new("RGB", (side, side), (255, 255, 255)), 0.35)


def _caption(draw: ImageDraw.ImageDraw, at: tuple[float, float], parts, colour) -> None:
    """A box's label and reference on a tab of its colour, in type that stays legible with the canvas shown at
    300 px (CAPTION_PX on the 512 px canvas is about 13 px on screen)."""
    caption = " · ".join(str(v) for v in parts if v)
    if caption:
        x0, y0 = at
        font = _font()
        left, top, right, bottom = draw.textbbox((x0 + 5, y0 + 3), caption, font=font)
        draw.rectangle([x0, y0, right + 5, bottom + 4], fill=colour)
        draw.text((x0 + 5, y0 + 3), caption, fill=(0, 0, 0), font=font)


def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=CAPTION_PX)
    except TypeError:  # a Pillow without FreeType: its bitmap font
        return ImageFont.load_default()


def _tint(canvas: Image.Image, path: str, colour) -> None:
    """Paint a mask file's white pixels in ``colour``, half transparent; an unreadable file paints nothing."""
    try:
        with Image.open(path, formats=PICTURE_FORMATS) as picture:
            m = np.asarray(picture.convert("L").resize(canvas.size, Image.NEAREST)) > 127
    except (OSError, ValueError, Image.DecompressionBombError):
        return
    px = np.asarray(canvas).copy()
    px[m] = (px[m] * 0.4 + np.array(colour) * 0.6).astype(np.uint8)
    canvas.paste(Image.fromarray(px))


def colour_routing(intensity: np.ndarray, step: int = ROUTING_STEP) -> Image.Image:
    """A routing map (subject i = intensity step*i, background 0) in the box colours: subject i in box i's colour."""
    out = np.full((*intensity.shape, 3), 30, dtype=np.uint8)
    for i in range(1, min(len(PALETTE), 255 // step) + 1):
        out[intensity == step * i] = PALETTE[i - 1]
    return Image.fromarray(out)
