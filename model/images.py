"""Image I/O and the released preprocessing: RGB conversion, stride-aligned resize, normalise, patchify.

Rounding follows the released code exactly (Python's round-half-to-even, area ratio used as a linear scale in
the max-pixel step, Pillow bicubic), because a one-stride difference changes every downstream number.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from .config import ResizeSpec
from .errors import InputError, MissingDependencyError
from .files import atomic_write

MAX_INPUT_PIXELS = 64 * 1024 * 1024  # larger inputs are refused as likely decompression bombs


def opencv(feature: str = "image processing"):
    """The ``cv2`` module, or one MissingDependencyError line naming the package and the feature that needs it."""
    try:
        import cv2
    except ImportError:
        raise MissingDependencyError("opencv-python-headless", None, feature) from None
    return cv2


def to_rgb(img: Image.Image) -> Image.Image:
    """RGBA or transparency-carrying images are composited on white; everything else is converted to RGB."""
    if img.mode == "RGBA" or "transparency" in img.info:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.split()[3])
        return canvas
    return img.convert("RGB")


def open_image(path: str | Path, max_pixels: int = MAX_INPUT_PIXELS) -> Image.Image:
    """Open and fully decode an image file, with specific errors for the usual ways this fails; an image over
    ``max_pixels`` is refused as a likely decompression bomb before it is decoded."""
    path = Path(path)
    if not os.path.isfile(path):  # (os.path: False, not an OSError, for a name too long)
        if os.path.isdir(path):
            raise InputError(f"{path} is a folder, not an image file: name a picture in it")
        raise InputError(f"Image file not found: {path}")
    try:
        with _opened(path, max_pixels) as img:
            img.load()
            return img.copy()
    except _TooLarge as exc:
        raise InputError(
            f"{path} is too large to decode safely (over {exc.args[0] // 2**20} megapixels); resize it first"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path} is not a readable image ({exc}): it is damaged, or not one of the formats read "
                         f"here ({', '.join(PICTURE_FORMATS)})") from None  # fmt: skip


# what a reference may be: raster formats PIL decodes itself (EPS, PDF and the like would call out to Ghostscript)
PICTURE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")  # (a phone's MPO opens as JPEG)


def restrict_formats() -> None:
    """Let PIL open only :data:`PICTURE_FORMATS` in this process, whoever opens: for a web server, where Gradio's
    components decode uploads themselves (a file named ``.png`` holding PostScript would reach Ghostscript).
    Writing is untouched. Idempotent."""
    Image.init()
    for name in [n for n in Image.OPEN if n not in PICTURE_FORMATS]:
        Image.OPEN.pop(name)
        if name in Image.ID:
            Image.ID.remove(name)


_WARNINGS = threading.Lock()  # warnings.catch_warnings is process-wide: one opener at a time silences PIL's


class _TooLarge(Exception):
    """A picture over the limit (PIL's own, or the caller's), found from its header before it is decoded."""


def _opened(path: Path, max_pixels: int) -> Image.Image:
    """``Image.open`` (which reads the header only) of a picture of at most ``max_pixels``. PIL's process-wide limit
    (``Image.MAX_IMAGE_PIXELS``: a web server sets it for the pictures Gradio decodes) is never changed here. PIL
    refuses a picture over twice it (and warns over it: silenced here, the check below is this function's own), so
    a picture is refused by whichever limit is lower."""
    with _WARNINGS, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(path, formats=PICTURE_FORMATS)
        except Image.DecompressionBombError:
            raise _TooLarge(_limit(max_pixels)) from None
    if img.width * img.height > max_pixels:
        img.close()
        raise _TooLarge(_limit(max_pixels))
    return img


def _limit(max_pixels: int) -> int:
    """The pixels a picture may have here: the caller's limit, or PIL's process-wide one where that is lower."""
    process = Image.MAX_IMAGE_PIXELS
    return min(max_pixels, 2 * process) if process else max_pixels


def resize_size(width: int, height: int, spec: ResizeSpec, img_num: int = 1) -> tuple[int, int]:
    """Target (width, height) of the released MaxLongEdgeMinShortEdge resize."""

    def make_div(v: float) -> int:
        return max(spec.stride, int(round(v / spec.stride) * spec.stride))

    def apply(w: float, h: float, sc: float) -> tuple[int, int]:
        return make_div(round(w * sc)), make_div(round(h * sc))

    sc = min(spec.max_size / max(width, height), 1.0)
    sc = max(sc, spec.min_size / min(width, height))
    w, h = apply(width, height, sc)
    if w * h > spec.max_pixels / img_num:
        w, h = apply(w, h, spec.max_pixels / img_num / (w * h))
    if max(w, h) > spec.max_size:
        w, h = apply(w, h, spec.max_size / max(w, h))
    return w, h


def resize(img: Image.Image, spec: ResizeSpec) -> Image.Image:
    size = resize_size(img.width, img.height, spec)
    return img if size == img.size else img.resize(size, Image.BICUBIC)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> float32 [3, H, W] in [-1, 1]."""
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    return (arr - 0.5) / 0.5


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[C, H, W] -> [(H/p)*(W/p), p*p*C], tokens row-major, features (py, px, c)."""
    c, h, w = x.shape
    x = x.reshape(c, h // p, p, w // p, p)
    return torch.einsum("chpwq->hwpqc", x).reshape((h // p) * (w // p), p * p * c)


def unpatchify(tokens: torch.Tensor, h: int, w: int, p: int, c: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: [h*w, p*p*c] -> [c, h*p, w*p]."""
    x = tokens.reshape(h, w, p, p, c)
    return torch.einsum("hwpqc->chpwq", x).reshape(c, h * p, w * p)


def grid_position_ids(h: int, w: int, grid: int) -> torch.Tensor:
    """Row-major ids ``row*grid + col`` of an h x w patch grid ("extrapolate" mode)."""
    if h > grid or w > grid:
        raise InputError(f"An image of {h}x{w} patches exceeds the model's {grid}x{grid} position grid")
    rows = torch.arange(h)[:, None] * grid
    return (rows + torch.arange(w)[None, :]).flatten()


def to_pil(decoded: torch.Tensor) -> Image.Image:
    """Decoder output [3, H, W] -> uint8 RGB, truncating (not rounding) like the released code."""
    x = ((decoded.float() * 0.5 + 0.5).clamp(0, 1) * 255).to(torch.uint8)
    return Image.fromarray(x.permute(1, 2, 0).cpu().numpy())


def save_png(img: Image.Image, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a PNG atomically (temporary name, then rename), with text metadata chunks."""
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(key, value)
    return atomic_write(path, lambda f: img.save(f, format="PNG", pnginfo=info))
