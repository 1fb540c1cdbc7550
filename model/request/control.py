"""SIGMA layout conditions: canny edges, depth and boxes, each rendered as a control image.

A control image enters the interleaved sequence as a ``<layout>`` reference, like SIGMA's layout data:
:func:`model.request.build.build_request` appends it as typed parts (:mod:`model.request.structure` renders
the controls).
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError, MissingDependencyError
from ..hub import WeightsUnavailableError
from ..images import opencv

log = logging.getLogger(__name__)

DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
DEPTH_PATTERNS = ("*.json", "*.safetensors", "*.txt")
# Distinct, saturated box colours (no black: black is the empty canvas)
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
)


CANNY_LOW, CANNY_HIGH, CANNY_BLUR = 100, 200, 0  # the defaults of ControlSpec, the CLI and the web UI
# Limits, checked by ControlSpec before any work. Thresholds: OpenCV compares them with the L1 Sobel gradient of an
# 8-bit picture, which reaches 8 * 255 = 2040; above ~1000 hardly an edge survives, so 0..1000 covers every useful
# setting. Blur: an odd Gaussian kernel side (0 or 1 = none); 31 px already washes out every edge of a 1024 px
# picture, and a kernel of 100001 px takes minutes per picture.
CANNY_MAX_THRESHOLD = 1000
CANNY_MAX_BLUR = 31


def check_canny(low, high, blur) -> None:
    """Refuse Canny settings that cannot work, naming the option; whole numbers only (a record may hold floats)."""
    for option, value, top in (("--canny-low", low, CANNY_MAX_THRESHOLD), ("--canny-high", high, CANNY_MAX_THRESHOLD),
                               ("--canny-blur", blur, CANNY_MAX_BLUR)):  # fmt: skip
        whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not whole or not 0 <= value <= top:
            raise InputError(f"{option} must be a whole number from 0 to {top} (got {str(value)[:40]})")
    if not low < high:
        raise InputError(
            f"Canny thresholds must satisfy low < high: --canny-low {low} is not below --canny-high {high} "
            f"(the defaults are {CANNY_LOW} and {CANNY_HIGH})"
        )
    if blur % 2 == 0 and blur:
        raise InputError(f"--canny-blur must be odd, from 1 to {CANNY_MAX_BLUR}, or 0 for none (got {blur})")


def canny_edges(
    image: Image.Image,
    low: int = CANNY_LOW,
    high: int = CANNY_HIGH,
    blur: int = CANNY_BLUR,
    size: tuple[int, int] | None = None,
) -> Image.Image:
    """White edges on black, as an RGB control image.

    Args:
        image: the source picture.
        low, high: hysteresis thresholds of the Canny detector (0..CANNY_MAX_THRESHOLD, low < high).
        blur: Gaussian blur kernel size before detection (0 = none; odd up to CANNY_MAX_BLUR, e.g. 3 or 5).
        size: (width, height) to resize the source to first.
    """
    check_canny(low, high, blur)
    cv2 = opencv("Canny edges")
    gray = np.asarray(image.convert("L").resize(size, Image.BICUBIC) if size else image.convert("L"))
    if blur:
        gray = cv2.GaussianBlur(gray, (blur, blur), 0)
    edges = cv2.Canny(gray, low, high)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


def depth_to_image(depth: np.ndarray) -> Image.Image:
    """A float depth/disparity array -> 8-bit RGB (min..max stretched to 0..255)."""
    d = depth.astype(np.float64)
    span = d.max() - d.min()
    norm = (d - d.min()) / span if span > 0 else np.zeros_like(d)
    return Image.fromarray(np.stack([(norm * 255).astype(np.uint8)] * 3, axis=-1))


def estimate_depth(
    image: Image.Image, model_id: str = DEFAULT_DEPTH_MODEL, device: str = "cpu", cache_dir: str | None = None
) -> Image.Image:
    """Depth (brighter = nearer, the Depth Anything convention) through a transformers depth-estimation model.

    The model is fetched through the same hub code as the weights, so offline it fails with the same one-line
    message (and a user can always pass a ready depth map instead).
    """
    from ..hub import HubOptions, snapshot

    command = "sigma download depth" + ("" if model_id == DEFAULT_DEPTH_MODEL else f" --depth-model {model_id}")
    local = snapshot(
        model_id,
        DEPTH_PATTERNS,
        HubOptions(cache_dir=cache_dir),
        "The depth model for --depth",
        command,
        alternative="or pass a ready depth map with --depth-map",
    )
    try:
        from transformers import pipeline
    except ImportError:  # pragma: no cover - transformers is a core dependency
        raise MissingDependencyError("transformers", None, "Depth estimation") from None
    try:
        estimator = pipeline("depth-estimation", model=str(local), device=device)
    except (OSError, ValueError) as exc:
        raise WeightsUnavailableError(
            f"The depth model in {local} does not load ({str(exc).splitlines()[0]})"
        ) from None
    out = estimator(image.convert("RGB"))
    return depth_to_image(np.asarray(out["predicted_depth"].squeeze().float().cpu().numpy())).resize(image.size)


@dataclass(frozen=True)
class Box:
    """A box in pixels of the output image: (x0, y0) top-left inclusive, (x1, y1) bottom-right exclusive."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str = ""

    def check(self, width: int, height: int, what: str = "box") -> None:
        values = (self.x0, self.y0, self.x1, self.y1)
        if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in values):
            raise InputError(f"{what} {self.as_text()} must be four finite numbers: x0,y0,x1,y1 (pixels or 0..1)")
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise InputError(f"{what} {self.as_text()} has zero area: write x0,y0,x1,y1 with x1 > x0 and y1 > y0")
        if self.x0 < 0 or self.y0 < 0 or self.x1 > width or self.y1 > height:
            raise InputError(f"{what} {self.as_text()} is outside the {width}x{height} image")

    def as_text(self) -> str:
        return ",".join(
            f"{v:g}" if isinstance(v, numbers.Real) else repr(v)[:20] for v in (self.x0, self.y0, self.x1, self.y1)
        )

    @staticmethod
    def parse(text: str, width: int, height: int) -> Box:
        """``x0,y0,x1,y1[:label]`` in pixels, or in fractions of the image when every value is <= 1."""
        coords, _, label = text.partition(":")
        try:
            values = [float(v) for v in coords.split(",")]
        except ValueError:
            values = []
        if len(values) != 4:
            raise InputError(
                f"'{text[:80]}' is not a box: write x0,y0,x1,y1 (pixels or 0..1 fractions), e.g. 0.1,0.2,0.5,0.9"
            )
        if not all(math.isfinite(v) for v in values):
            raise InputError(
                f"box '{text[:80]}' holds a value that is not a finite number: write x0,y0,x1,y1 in pixels or 0..1"
            )
        if all(0 <= v <= 1 for v in values):
            values = [values[0] * width, values[1] * height, values[2] * width, values[3] * height]
        return Box(*values, label=label.strip())

    def mask(self, width: int, height: int) -> np.ndarray:
        m = np.zeros((height, width), dtype=bool)
        m[int(round(self.y0)) : int(round(self.y1)), int(round(self.x0)) : int(round(self.x1))] = True
        return m


def render_boxes(boxes: list[Box], size: tuple[int, int]) -> Image.Image:
    """Labelled boxes as a control image: each filled with its own colour, outlined, label in the corner."""
    width, height = size
    canvas = Image.new("RGB", size, (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, box in enumerate(boxes):
        box.check(width, height)
        colour = PALETTE[i % len(PALETTE)]
        draw.rectangle([box.x0, box.y0, box.x1 - 1, box.y1 - 1], fill=colour, outline=(255, 255, 255), width=2)
        if box.label:
            draw.text((box.x0 + 4, box.y0 + 2), box.label, fill=(0, 0, 0))
    return canvas
