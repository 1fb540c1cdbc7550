"""What the page shows: messages in browser words (escaped, no server paths), the box canvas, the routing map.

Pure functions of their inputs (no Gradio), unit-tested on their own.
"""

from __future__ import annotations

import html
import re

import numpy as np
from PIL import Image, ImageDraw

from sigma_studio.model.control import PALETTE

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
CANVAS_SIDE = 512  # pixels of the box canvas (boxes are stored as fractions of the picture)
_PASS_IMAGE = re.compile(r"pass --image (img\d+)=FILE")
_OPTION = re.compile(r"--[a-z][a-z-]*")
_PATH = re.compile(r"(?:/[^\s/:;,()'\"]+)+/([^\s/:;,()'\"]+)")


def browser_text(message: str) -> str:
    """A toolkit message as the page should say it: upload instead of --image, setting names instead of options,
    file names instead of server paths. Plain text (escape it for HTML)."""
    text = _PASS_IMAGE.sub(r"upload an image into \1", message)
    text = text.replace("; pass --image", "; upload it")
    text = _OPTION.sub(lambda m: _OPTION_WORDS.get(m.group(0), m.group(0)), text)
    return _PATH.sub(r"\1", text)


def error_html(message: str | None) -> str:
    """The page's one error box: escaped text (``<img5>`` stays visible), or nothing."""
    if not message:
        return ""
    return f'<div class="sigma-error" role="alert">⚠ {html.escape(browser_text(message))}</div>'


def canvas_image(rows: list[list], side: int, corner: tuple[float, float] | None = None) -> Image.Image:
    """The box canvas: every box outlined in its colour with its label and reference, and the first corner of the
    box being drawn marked with a cross. ``rows`` are [x0, y0, x1, y1 (0..1), label, reference]."""
    canvas = Image.new("RGB", (side, side), (235, 235, 235))
    draw = ImageDraw.Draw(canvas)
    for i, row in enumerate(rows):
        x0, y0, x1, y1 = (float(v) * side for v in row[:4])
        colour = PALETTE[i % len(PALETTE)]
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=max(2, side // 128))
        caption = " · ".join(str(v) for v in row[4:6] if v)
        if caption:
            draw.rectangle([x0, y0, x0 + 6 * len(caption) + 6, y0 + 12], fill=colour)
            draw.text((x0 + 3, y0 + 1), caption, fill=(0, 0, 0))
    if corner is not None:
        cx, cy = corner
        r = max(4, side // 40)
        draw.line([cx - r, cy, cx + r, cy], fill=(20, 20, 20), width=2)
        draw.line([cx, cy - r, cx, cy + r], fill=(20, 20, 20), width=2)
    return canvas


def colour_routing(intensity: np.ndarray) -> Image.Image:
    """A routing map (subject i = intensity 10*i, background 0) in the box colours: subject i in box i's colour."""
    out = np.full((*intensity.shape, 3), 30, dtype=np.uint8)
    for i in range(1, len(PALETTE) + 1):
        out[intensity == 10 * i] = PALETTE[i - 1]
    return Image.fromarray(out)
