"""Structure controls as the user gives them (files, thresholds, boxes, subjects), and their rendering.

:class:`ControlSpec` is plain data: the CLI's options, the web UI's layout tab and a stored record all map onto it,
and :func:`model.request.build.build_request` renders it. Two families:

* **SIGMA layout**: a Canny edge map, a depth map (estimated, or given ready) or drawn boxes, each a ``<layout>``
  reference image at the output size.
* **SIGMA-GEN subjects**: ``FILE@box=x0,y0,x1,y1`` | ``FILE@mask=MASK.png`` | ``FILE@mask=MASK.png,depth=DEPTH.png``
  | ``FILE@box3d=cx,cy,cz,w,h,d[,yaw]``, where FILE may also name a given reference (``img2@box=...``). A subject
  without ``@...`` takes the next unused box, then the next unused mask. With subjects, ``boxes`` place them
  instead of being drawn. ``background`` keeps a background picture outside the subjects.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import ArchConfig
from ..errors import InputError
from ..images import open_image, resize, to_rgb
from .control import (
    CANNY_BLUR,
    CANNY_HIGH,
    CANNY_LOW,
    DEFAULT_DEPTH_MODEL,
    Box,
    canny_edges,
    check_canny,
    estimate_depth,
    render_boxes,
)
from .multisubject import Box3D, Subject

PATH_FIELDS = ("canny", "depth", "depth_map", "background", "scene_depth")
IMAGE_NAME = re.compile(r"img\d+")
MAX_BOXES = 64  # labelled boxes of one layout (each is drawn: a request of thousands would draw for minutes)


@dataclass(frozen=True)
class ControlSpec:
    """Every structure control of one request, as given (paths, numbers, box and subject specs)."""

    canny: str | None = None  # image whose Canny edges become a <layout> reference
    canny_low: int = CANNY_LOW
    canny_high: int = CANNY_HIGH
    canny_blur: int = CANNY_BLUR  # Gaussian blur kernel before Canny (odd; 0 = none)
    depth: str | None = None  # image whose estimated depth becomes a <layout> reference
    depth_map: str | None = None  # a ready depth map to use as the <layout> reference
    depth_model: str = DEFAULT_DEPTH_MODEL
    boxes: tuple[str, ...] = ()  # x0,y0,x1,y1[:label], pixels or 0..1 fractions
    masks: tuple[str, ...] = ()  # subject mask files
    subjects: tuple[str, ...] = ()  # SOURCE[@placement]; SOURCE is a file or a reference name (img2)
    background: str | None = None  # keep this picture outside the subjects
    scene_depth: str | None = None  # with subjects: a whole-scene depth map as the structure channel
    compose: bool = False  # with subjects: the prompt describes the whole picture
    faces: bool = False  # with subjects: they are people (<id> instead of <subject>)

    def __post_init__(self) -> None:
        for name, option in (("boxes", "--box"), ("masks", "--mask"), ("subjects", "--subject")):
            value = getattr(self, name) or ()  # lists from JSON or the CLI become tuples
            if not isinstance(value, tuple | list) or not all(isinstance(v, str) for v in value):
                raise InputError(f"{option} values must be a list of texts (got {value!r:.60})")
            object.__setattr__(self, name, tuple(value))
        if len(self.boxes) > MAX_BOXES:
            raise InputError(f"{len(self.boxes)} --box values given; a layout takes at most {MAX_BOXES} boxes")
        for name in (*PATH_FIELDS, "depth_model"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise InputError(f"--{name.replace('_', '-')} must be a file path (got {getattr(self, name)!r:.60})")
        for name in ("compose", "faces"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"--{name} is a flag, on or off (got {getattr(self, name)!r:.60})")
        check_canny(self.canny_low, self.canny_high, self.canny_blur)
        self._check_combinations()

    def _check_combinations(self) -> None:
        """Options that only mean something together with another are refused alone (never silently ignored)."""
        if self.depth and self.depth_map:
            raise InputError("--depth estimates a depth map and --depth-map gives one: give only one of them")
        for flag, on in (("--compose", self.compose), ("--faces", self.faces)):
            if on and not self.subjects:
                raise InputError(f"{flag} changes how subjects are placed: give at least one --subject, or drop {flag}")
        if self.background and not self.subjects:
            raise InputError("--background keeps a background outside the subjects: give at least one --subject")
        if self.scene_depth and not self.subjects:
            raise InputError("--scene-depth is the structure of a subject layout: give at least one --subject")
        if self.masks and not self.subjects:
            raise InputError("--mask places a subject: give one --subject per mask")

    @property
    def any_layout(self) -> bool:
        return bool(self.canny or self.depth or self.depth_map or (self.boxes and not self.subjects))

    @property
    def empty(self) -> bool:
        return self == ControlSpec()

    def to_json(self) -> dict:
        """The spec with every file path made absolute (so a record replays from another folder)."""
        return dataclasses.asdict(self.map_paths(_absolute))

    @classmethod
    def from_json(cls, data: dict | None) -> ControlSpec:
        if not data:
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def map_paths(self, fix: Callable[[str], str]) -> ControlSpec:
        """The spec with ``fix`` applied to every file it names (control images, masks, subject files)."""

        def fix_spec(spec: str) -> str:  # SOURCE@placement, where the placement may name mask / depth files
            source, sep, placement = spec.partition("@")
            if placement.startswith("mask="):
                mask, dsep, depth = placement[5:].partition(",depth=")
                placement = "mask=" + fix(mask) + (dsep + fix(depth) if dsep else "")
            return fix(source) + sep + placement

        changes = {k: fix(getattr(self, k)) for k in PATH_FIELDS if getattr(self, k)}
        changes |= {"masks": tuple(fix(m) for m in self.masks), "subjects": tuple(fix_spec(s) for s in self.subjects)}
        return dataclasses.replace(self, **changes)


def _absolute(value: str) -> str:
    return str(Path(value).resolve()) if os.path.exists(value) else value


def load_rgb(path: str) -> Image.Image:
    return to_rgb(open_image(path))


def _gray(path: str, size: tuple[int, int], what: str) -> np.ndarray:
    """A mask or depth image as uint8 [H, W] at the output size (width, height): one of another size but the same
    shape (aspect within 1 %) is resized, nearest-neighbour, so a mask drawn at any resolution fits; another
    shape is an error, since stretching would move the subject."""
    img = open_image(path).convert("L")
    if img.size != size:
        if abs(img.width / img.height - size[0] / size[1]) > 0.01 * size[0] / size[1]:
            raise InputError(
                f"{what} {path} is {img.width}x{img.height}, another shape than the {size[0]}x{size[1]} output: "
                "draw it at the output's aspect ratio"
            )
        img = img.resize(size, Image.NEAREST)
    return np.asarray(img)


def layout_images(
    spec: ControlSpec,
    arch: ArchConfig,
    size_hw: tuple[int, int] | None,
    *,
    estimate: bool = True,
    cache_dir: str | None = None,
) -> dict[str, Image.Image]:
    """SIGMA layout control images by kind (canny, depth, boxes), each at the output size when one is given.

    ``estimate=False`` stands a grey picture in for an estimated depth map (a preview that must not run the
    depth model).
    """
    out: dict[str, Image.Image] = {}
    target = (size_hw[1], size_hw[0]) if size_hw else None

    def fit(img: Image.Image) -> Image.Image:
        if target:
            return img.resize(target, Image.BICUBIC) if img.size != target else img
        return resize(img, arch.vae_transform)

    if spec.canny:
        out["canny"] = canny_edges(fit(load_rgb(spec.canny)), spec.canny_low, spec.canny_high, spec.canny_blur)
    if spec.depth_map:
        out["depth"] = fit(load_rgb(spec.depth_map))
    elif spec.depth:
        source = load_rgb(spec.depth)
        depth = (
            estimate_depth(source, spec.depth_model, cache_dir=cache_dir)
            if estimate
            else Image.new("RGB", source.size, "grey")
        )
        out["depth"] = fit(depth)
    if spec.boxes and not spec.subjects:
        w, h = target or (arch.max_image_size, arch.max_image_size)
        out["boxes"] = render_boxes([Box.parse(b, w, h) for b in spec.boxes], (w, h))
    return out


def subject_size(spec: ControlSpec, arch: ArchConfig, size_hw: tuple[int, int] | None) -> tuple[int, int]:
    """Output (height, width) with subjects: the size asked for, else the background's, else the largest square."""
    if size_hw:
        return size_hw
    if spec.background:
        bg = resize(load_rgb(spec.background), arch.vae_transform)
        return bg.height, bg.width
    return arch.max_image_size, arch.max_image_size


def parse_subjects(
    spec: ControlSpec, size_hw: tuple[int, int], references: dict[str, Image.Image] | None = None
) -> list[Subject]:
    """The subjects of a spec; a source that names a given reference (``img2``) takes that image."""
    h, w = size_hw
    boxes, masks = list(spec.boxes), list(spec.masks)
    references = references or {}
    subjects = []
    for k, item in enumerate(spec.subjects, start=1):
        source, _, placement = item.partition("@")
        if source not in references and IMAGE_NAME.fullmatch(source):
            given = ", ".join(references) or "none"
            raise InputError(f"subject {k} is {source}, which is not a given reference (given: {given})")
        image = references[source] if source in references else load_rgb(source)
        if not placement:
            if boxes:
                placement = f"box={boxes.pop(0)}"
            elif masks:
                placement = f"mask={masks.pop(0)}"
            else:
                raise InputError(f"subject {k} ({source}) has no placement: add @box=..., @mask=... or a --box/--mask")
        subjects.append(_subject(image, placement, k, w, h, source if source in references else str(k)))
    if boxes or masks:
        raise InputError(f"{len(boxes) + len(masks)} --box/--mask values are left over: one placement per subject")
    return subjects


def _subject(image: Image.Image, placement: str, k: int, w: int, h: int, ident: str) -> Subject:
    kind, _, value = placement.partition("=")
    if kind == "box":
        return Subject(image, box=Box.parse(value, w, h), id=ident)
    if kind == "mask":
        mask_path, _, depth = value.partition(",depth=")
        mask = _gray(mask_path, (w, h), f"subject {k}'s mask") > 127
        depth_arr = _gray(depth, (w, h), f"subject {k}'s depth map") if depth else None
        return Subject(image, mask=mask, depth=depth_arr, id=ident)
    if kind == "box3d":
        try:
            v = [float(x) for x in value.split(",")]
        except ValueError:
            v = []
        if len(v) not in (6, 7) or not all(math.isfinite(x) for x in v):
            raise InputError(f"subject {k}: box3d takes cx,cy,cz,w,h,d[,yaw_degrees] (got '{value}')")
        yaw = math.radians(v[6]) if len(v) == 7 else 0.0
        return Subject(image, box3d=Box3D(tuple(v[:3]), tuple(v[3:6]), yaw), id=ident)
    raise InputError(f"subject {k}: unknown placement '{kind}'; use box=, mask= or box3d=")
