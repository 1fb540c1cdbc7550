"""The SIGMA-GEN converter's random draws for one row (:mod:`model.data.sigmagen` puts them together): which
structure input places the subjects, how that input is loosened (mask and box dilation, box aspect jitter: the
structure only, never the target), which spatial-control channel is dropped, where each identity image comes from
(a prepared one, or a crop of the target), and which of the two prompts the row gets."""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..images import open_image, opencv, to_rgb
from ..request.control import Box
from ..request.multisubject import Subject
from .scene import Instance, Scene, bbox
from .sigmagen_options import CHANNELS, SigmaGenOptions

log = logging.getLogger(__name__)


class SceneSkipped(InputError):
    """A scene that cannot give a row; its message is the reason the summary counts (no file names, no numbers
    that differ from scene to scene)."""


def draw_precision(scene: Scene, kept: list[Instance], opts: SigmaGenOptions, rng: random.Random) -> list[str]:
    """Each kept instance's structure input: one for the whole row (``precision_draw`` "example", the paper) or one
    per subject, drawn uniformly among ``opts.precision`` where the data supports it (mask + depth needs a depth
    map, a 3-D box needs the instance's, and per example every instance's)."""

    def fits(kind: str, insts: list[Instance]) -> bool:
        if kind == "mask_depth":
            return scene.depth is not None
        return kind != "box3d" or all(i.box3d is not None for i in insts)

    groups = [kept] if opts.precision_draw == "example" else [[i] for i in kept]
    kinds = []
    for insts in groups:
        choices = [k for k in opts.precision if fits(k, insts)]
        if not choices:
            raise SceneSkipped(f"no --precision of {','.join(opts.precision)} fits it (mask_depth needs a depth map, "
                               "box3d a 3-D box for each subject)")  # fmt: skip
        kinds += [rng.choice(choices)] * len(insts)
    return kinds


def place(scene: Scene, inst: Instance, kind: str, image: Image.Image, sid: str, opts: SigmaGenOptions,
          rng: random.Random, tally: Counter) -> Subject:  # fmt: skip
    """The subject placed by its ``kind`` of structure, loosened as the options say (3-D boxes are kept as given);
    ``tally`` counts what was changed."""
    if kind == "box3d":
        return Subject(image, box3d=inst.box3d, id=sid)
    if kind == "box":
        box, dilated, jittered = augment_box(bbox(inst.mask), scene.image.size, opts, rng)
        tally["boxes dilated"] += dilated
        tally["boxes aspect-jittered"] += jittered
        return Subject(image, box=box, id=sid)
    mask, grown = dilate_mask(inst.mask, opts.mask_dilation, rng)
    tally["masks dilated"] += grown > 0
    return Subject(image, mask=mask, depth=scene.depth if kind == "mask_depth" else None, id=sid)


def dilate_mask(mask: np.ndarray, share: float, rng: random.Random) -> tuple[np.ndarray, int]:
    """(the mask grown by a whole number of pixels drawn from 0..round(share x its box's shorter side), that number):
    a round (elliptical) structuring element, so a grown mask stays within that distance of the original."""
    x0, y0, x1, y1 = bbox(mask)
    grown = rng.randint(0, int(round(share * min(x1 - x0, y1 - y0))))
    if grown == 0:
        return mask, 0
    cv2 = opencv("SIGMA-GEN mask dilation")
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grown + 1, 2 * grown + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool), grown


def augment_box(box: tuple[float, float, float, float], size: tuple[int, int], opts: SigmaGenOptions,
                rng: random.Random) -> tuple[Box, bool, bool]:  # fmt: skip
    """(the 2-D box ``(x0, y0, x1, y1)`` with its aspect ratio scaled by 1 + u, |u| <= ``box_aspect_jitter``,
    about its centre and at the same area, then each side moved out by 0..``box_dilation`` of its width or height,
    clipped to the picture of ``size`` (width, height); whether it was dilated; whether it was jittered)."""
    x0, y0, x1, y1 = map(float, box)
    factor = 1.0 + rng.uniform(-opts.box_aspect_jitter, opts.box_aspect_jitter)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bw, bh = (x1 - x0) * math.sqrt(factor), (y1 - y0) / math.sqrt(factor)
    x0, x1, y0, y1 = cx - bw / 2, cx + bw / 2, cy - bh / 2, cy + bh / 2
    out = [rng.uniform(0, opts.box_dilation) for _ in range(4)]  # left, top, right, bottom
    x0, y0, x1, y1 = x0 - out[0] * bw, y0 - out[1] * bh, x1 + out[2] * bw, y1 + out[3] * bh
    w, h = size
    clipped = Box(max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1))
    return clipped, any(out), factor != 1.0


def drop_channel(control: np.ndarray, opts: SigmaGenOptions, rng: random.Random) -> str | None:
    """With chance ``channel_drop``, zero exactly one channel of the spatial control ``control`` [H, W, 3] in
    place, drawn uniformly among ``drop_channels`` that hold anything (an empty one would drop nothing); its name,
    or None."""
    if rng.random() >= opts.channel_drop:
        return None
    live = [c for c in opts.drop_channels if control[..., CHANNELS.index(c)].any()]
    if not live:
        return None
    name = rng.choice(live)
    control[..., CHANNELS.index(name)] = 0
    return name


def identity(scene: Scene, inst: Instance, opts: SigmaGenOptions, rng: random.Random) -> tuple[Image.Image, bool]:
    """(the subject's identity image, whether it is a prepared one): ``IDENTITIES/<scene id>/<key>.png`` when the
    options name a folder and the file exists (used as given), else a crop of the target (:func:`crop`)."""
    path = prepared_path(scene, inst, opts.identities)
    if path is None:
        return crop(scene, inst, opts, rng), False
    try:
        return to_rgb(open_image(path)), True
    except InputError as exc:
        log.warning("scene %s: %s", scene.scene_id, exc)
        raise SceneSkipped("a prepared identity could not be read") from None


def prepared_path(scene: Scene, inst: Instance, folder: str | None) -> Path | None:
    """``folder/<scene id>/<key>.png`` when it is a file; None without a folder, a key, or a safe name (an id with
    a path separator, or '..', is never looked up)."""
    names = (scene.scene_id, inst.key)
    if folder is None or not all(n and n not in (".", "..") and not set(n) & set("/\\\0") for n in names):
        return None
    path = Path(folder) / scene.scene_id / f"{inst.key}.png"
    return path if path.is_file() else None


def crop(scene: Scene, inst: Instance, opts: SigmaGenOptions, rng: random.Random) -> Image.Image:
    """The instance alone (other pixels black), cut at its box moved and grown by up to ``crop_jitter``, mirrored
    with chance ``flip``: the target's own pixels, which the model can learn to paste."""
    h, w = inst.mask.shape
    x0, y0, x1, y1 = bbox(inst.mask)
    bw, bh = x1 - x0, y1 - y0
    j = opts.crop_jitter
    x0 = max(0, int(x0 - bw * rng.uniform(0, j)))
    y0 = max(0, int(y0 - bh * rng.uniform(0, j)))
    x1 = min(w, int(x1 + bw * rng.uniform(0, j)))
    y1 = min(h, int(y1 + bh * rng.uniform(0, j)))
    pixels = np.asarray(scene.image) * inst.mask[..., None]
    cut = Image.fromarray(pixels[y0:y1, x0:x1].astype(np.uint8))
    return cut.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < opts.flip else cut


def prompt(scene: Scene, kept: list[Instance], opts: SigmaGenOptions, rng: random.Random) -> tuple[str, str, str]:
    """(the prompt, its form, its source): with chance ``compose_share`` the full caption after "Place these
    subjects to compose:" (form "compose"; source "data", or "names" for a caption made of the subjects' names),
    else a caption of the background alone after "Place these subjects in" (form "background"; source "data", or
    "generic" for ``background_prompt``), the two prompt forms inference builds (``--compose`` or not)."""
    if rng.random() < opts.compose_share:
        if scene.caption:
            return f"Place these subjects to compose: {scene.caption}", "compose", "data"
        names = ", ".join(i.name for i in kept)
        return f"Place these subjects to compose: a picture of {names}", "compose", "names"
    if scene.background_caption:
        return f"Place these subjects in {scene.background_caption}", "background", "data"
    return f"Place these subjects in {opts.background_prompt}", "background", "generic"
