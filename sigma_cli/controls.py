"""Command-line structure control: options -> control images (SIGMA layout) or a subject request (SIGMA-GEN).

Subjects: ``--subject FILE@box=x0,y0,x1,y1`` | ``FILE@mask=MASK.png`` | ``FILE@mask=MASK.png,depth=DEPTH.png`` |
``FILE@box3d=cx,cy,cz,w,h,d[,yaw]``. A subject given without ``@...`` takes the next unused ``--box``, then the
next unused ``--mask``. Without subjects, ``--box`` values are drawn as a box layout control image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sigma_studio.model import InputError
from sigma_studio.model.config import ArchConfig
from sigma_studio.model.control import DEFAULT_DEPTH_MODEL, Box, canny_edges, estimate_depth, render_boxes
from sigma_studio.model.images import open_image, resize, to_rgb
from sigma_studio.model.multisubject import Box3D, Subject


@dataclass
class ControlOptions:
    canny: str | None = None
    canny_low: int = 100
    canny_high: int = 200
    canny_blur: int = 0
    depth: str | None = None
    depth_map: str | None = None
    depth_model: str = DEFAULT_DEPTH_MODEL
    boxes: list[str] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    background: str | None = None
    cache_dir: str | None = None

    @property
    def any_layout(self) -> bool:
        return bool(self.canny or self.depth or self.depth_map or (self.boxes and not self.subjects))


def _load_rgb(path: str) -> Image.Image:
    return to_rgb(open_image(path))


def _gray(path: str, size: tuple[int, int], what: str) -> np.ndarray:
    """A mask or depth image as uint8 [H, W]; it must already have the output size (width, height)."""
    img = open_image(path).convert("L")
    if img.size != size:
        raise InputError(f"{what} {path} is {img.width}x{img.height}; the output is {size[0]}x{size[1]}")
    return np.asarray(img)


def layout_controls(opts: ControlOptions, arch: ArchConfig, size_hw: tuple[int, int] | None) -> dict[str, Image.Image]:
    """SIGMA layout control images by kind, each at the output size when one is given."""
    out: dict[str, Image.Image] = {}
    target = (size_hw[1], size_hw[0]) if size_hw else None

    def fit(img: Image.Image) -> Image.Image:
        if target:
            return img.resize(target, Image.BICUBIC) if img.size != target else img
        return resize(img, arch.vae_transform)

    if opts.canny:
        src = fit(_load_rgb(opts.canny))
        out["canny"] = canny_edges(src, opts.canny_low, opts.canny_high, opts.canny_blur)
    if opts.depth_map:
        out["depth"] = fit(_load_rgb(opts.depth_map))
    elif opts.depth:
        out["depth"] = fit(estimate_depth(_load_rgb(opts.depth), opts.depth_model, cache_dir=opts.cache_dir))
    if opts.boxes and not opts.subjects:
        w, h = target or (arch.max_image_size, arch.max_image_size)
        out["boxes"] = render_boxes([Box.parse(b, w, h) for b in opts.boxes], (w, h))
    return out


def parse_subjects(opts: ControlOptions, size_hw: tuple[int, int]) -> list[Subject]:
    h, w = size_hw
    boxes, masks = list(opts.boxes), list(opts.masks)
    subjects = []
    for k, spec in enumerate(opts.subjects, start=1):
        path, _, placement = spec.partition("@")
        image = _load_rgb(path)
        if not placement:
            if boxes:
                placement = f"box={boxes.pop(0)}"
            elif masks:
                placement = f"mask={masks.pop(0)}"
            else:
                raise InputError(f"subject {k} ({path}) has no placement: add @box=..., @mask=... or a --box/--mask")
        subjects.append(_subject(image, placement, k, w, h))
    if boxes or masks:
        raise InputError(f"{len(boxes) + len(masks)} --box/--mask values are left over: one placement per subject")
    return subjects


def _subject(image: Image.Image, placement: str, k: int, w: int, h: int) -> Subject:
    kind, _, value = placement.partition("=")
    if kind == "box":
        return Subject(image, box=Box.parse(value, w, h), id=str(k))
    if kind == "mask":
        mask_path, _, depth = value.partition(",depth=")
        mask = _gray(mask_path, (w, h), f"subject {k}'s mask") > 127
        depth_arr = _gray(depth, (w, h), f"subject {k}'s depth map") if depth else None
        return Subject(image, mask=mask, depth=depth_arr, id=str(k))
    if kind == "box3d":
        try:
            v = [float(x) for x in value.split(",")]
        except ValueError:
            v = []
        if len(v) not in (6, 7):
            raise InputError(f"subject {k}: box3d takes cx,cy,cz,w,h,d[,yaw_degrees] (got '{value}')")
        return Subject(
            image, box3d=Box3D(tuple(v[:3]), tuple(v[3:6]), math.radians(v[6]) if len(v) == 7 else 0.0), id=str(k)
        )
    raise InputError(f"subject {k}: unknown placement '{kind}'; use box=, mask= or box3d=")


def subject_size(opts: ControlOptions, arch: ArchConfig, size_hw: tuple[int, int] | None) -> tuple[int, int]:
    """Output (height, width): --size, else the background's model size, else the largest square."""
    if size_hw:
        return size_hw
    if opts.background:
        bg = resize(_load_rgb(opts.background), arch.vae_transform)
        return bg.height, bg.width
    return arch.max_image_size, arch.max_image_size


def save_controls(images: dict[str, Image.Image], out_dir: Path) -> list[Path]:
    from sigma_studio.model.images import save_png

    return [save_png(img, out_dir / f"{name}.png") for name, img in images.items()]
