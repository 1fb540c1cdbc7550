"""An annotated scene, the SIGMA-GEN converter's input: a picture, its instances (each a visible mask, optionally a
3-D box), and optionally a depth map, a caption of the whole picture and a caption of its background alone.

The readers fill it (:func:`model.data.coco.coco_scenes`, :func:`model.shapes.scenes.shapes_scenes`); the converter
(:mod:`model.data.sigmagen`) turns it into a training row."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..request.multisubject import Box3D


@dataclass
class Instance:
    name: str
    mask: np.ndarray  # bool [H, W], the visible pixels
    box3d: Box3D | None = None  # its 3-D box in camera coordinates, when the data has one
    key: str = ""  # its prepared identity's file stem: IDENTITIES/<scene id>/<key>.png ("": none can be looked up)


@dataclass
class Scene:
    scene_id: str
    image: Image.Image
    instances: list[Instance]
    depth: np.ndarray | None = None  # uint8 [H, W], brighter = nearer
    caption: str = ""  # the whole picture, subjects included
    extra: dict = field(default_factory=dict)
    background_caption: str = ""  # the picture without its subjects ("": the converter's generic prompt)


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a non-empty bool mask, ends exclusive."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
