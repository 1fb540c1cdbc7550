"""SIGMA-GEN multi-subject control: up to 10 subjects, each an identity image plus one placement.

Two control images carry the structure (SIGMA-GEN paper):

* the **spatial control** image stacks three channels at the output resolution: the routing map composited in
  ascending subject order, the routing map composited in descending order, and the structure (depth restricted
  to the subjects, zeros elsewhere). Subject i (1-based) has intensity step*i, the background 0: the paper's step
  is 10; a model trained with another stores it as ``ArchConfig.routing_step``. Coarse placements
  (2-D and 3-D boxes) that overlap hide each other in one order and not in the other, so each subject stays
  visible in one of the two maps; precise masks already say who is in front, so they are painted last, in the
  same order in both maps, and with precise masks only the two maps are equal.
* the **identity dictionary** stacks the subject images, each resized to one fixed tile, vertically in subject
  order: tile i answers to intensity step*i.

Both enter the model as references: the dictionary under ``<subject>`` (or ``<id>`` for faces), the spatial
control under ``<layout>``. With a background image, the background is kept: after every step the latent outside
the subjects is replaced by the background latent noised to that step, and after decoding the background's own
pixels are pasted back outside the subjects (feathered a few pixels into them), so they are exactly the original's.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..config import ROUTING_STEP, SHEET_ROWS
from ..errors import InputError
from ..images import opencv
from .control import Box

MAX_SUBJECTS = 10
MAX_EXTENT = 1000.0  # metres: the largest |coordinate| and size of a 3-D box (beyond, the projection overflows)
FOV_RANGE = (1.0, 179.0)  # degrees: a pinhole camera's horizontal field of view must stay inside (0, 180)
DEFAULT_TILE = 256
MAX_ROWS = SHEET_ROWS  # identity-sheet cells per column (see identity_dictionary; a model may store another)


@dataclass(frozen=True)
class Box3D:
    """A 3-D box in camera coordinates (x right, y down, z forward, metres), turned by ``yaw`` about y."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]  # width (x), height (y), depth (z)
    yaw: float = 0.0  # radians
    fov: float = 60.0  # horizontal field of view of the pinhole camera, degrees

    def check(self, what: str = "3-D box") -> None:
        """Finite numbers, a positive size and every value within ``MAX_EXTENT`` (and the field of view within
        ``FOV_RANGE``): NaN or huge values would project to nothing, or to an overflowing hull."""
        values = (*self.center, *self.size, self.yaw, self.fov)
        if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in values):
            raise InputError(f"{what} holds a value that is not a finite number: write cx,cy,cz,w,h,d[,yaw_degrees]")
        if not all(abs(v) <= MAX_EXTENT for v in (*self.center, *self.size)):
            raise InputError(f"{what}: centre and size must be within {MAX_EXTENT:g} metres (got {self.center}, "
                             f"{self.size})")  # fmt: skip
        if min(self.size) <= 0:
            raise InputError(f"{what}: width, height and depth must be positive (got {self.size})")
        if not FOV_RANGE[0] <= self.fov <= FOV_RANGE[1]:
            raise InputError(f"{what}: the field of view must be {FOV_RANGE[0]:g} to {FOV_RANGE[1]:g} degrees")

    def corners(self) -> np.ndarray:
        w, h, d = (s / 2 for s in self.size)
        local = np.array([[sx * w, sy * h, sz * d] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        return local @ rot.T + np.array(self.center)

    def depth_map(self, width: int, height: int) -> np.ndarray:
        """z of the box's nearest surface along each pixel's ray (float [H, W]; inf where the ray misses it)."""
        f = (width / 2) / math.tan(math.radians(self.fov) / 2)
        u, v = np.meshgrid(np.arange(width) + 0.5 - width / 2, np.arange(height) + 0.5 - height / 2)
        rays = np.stack([u / f, v / f, np.ones_like(u)], axis=-1)  # camera rays with z = 1: t along a ray is z
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        origin = rot.T @ -np.array(self.center)  # the camera in the box's frame
        direction = rays @ rot  # each ray in the box's frame (rot.T @ ray, row-wise)
        half = np.array(self.size) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (-half - origin) / direction, (half - origin) / direction
        near = np.nanmax(np.minimum(t1, t2), axis=-1)
        far = np.nanmin(np.maximum(t1, t2), axis=-1)
        hit = (far >= near) & (far > 0)
        return np.where(hit, np.maximum(near, 0.0), np.inf)

    def project(self, width: int, height: int) -> tuple[np.ndarray, float]:
        """(mask [H, W] of the projected box, its depth: the centre's z)."""
        pts = self.corners()
        if (pts[:, 2] <= 0.05).any():
            raise InputError(f"3-D box at {self.center} is (partly) behind the camera: every corner needs z > 0.05")
        f = (width / 2) / math.tan(math.radians(self.fov) / 2)
        uv = np.stack([pts[:, 0] * f / pts[:, 2] + width / 2, pts[:, 1] * f / pts[:, 2] + height / 2], axis=1)
        cv2 = opencv("3-D boxes")
        hull = cv2.convexHull(uv.astype(np.float32)).astype(np.int32)
        mask = np.zeros((height, width), dtype=np.uint8)
        cv2.fillConvexPoly(mask, hull, 1)
        if not mask.any():
            raise InputError(f"3-D box at {self.center} projects outside the {width}x{height} image")
        return mask.astype(bool), float(self.center[2])


@dataclass(frozen=True)
class Subject:
    """One subject: its identity image and exactly one placement.

    ``box`` (2-D, coarse), ``mask`` (precise, [H, W] bool at the output size), ``box3d`` (coarse, gives depth),
    or ``mask`` with ``depth`` (precise; depth [H, W] uint8, brighter = nearer).
    """

    image: Image.Image
    box: Box | None = None
    mask: np.ndarray | None = None
    box3d: Box3D | None = None
    depth: np.ndarray | None = None
    id: str = ""


@dataclass(frozen=True)
class SubjectRegions:
    regions: list[np.ndarray]  # bool [H, W] per subject
    precise: list[bool]
    structure: np.ndarray  # uint8 [H, W]
    box_depths: list[float | None] = field(default_factory=list)


def validate(subjects: list[Subject], size: tuple[int, int]) -> None:
    """Specific errors for every way a subject list can be wrong. ``size`` is (height, width)."""
    h, w = size
    if not subjects:
        raise InputError("Give at least one subject (an identity image with a placement)")
    if len(subjects) > MAX_SUBJECTS:
        raise InputError(f"{len(subjects)} subjects given; SIGMA-GEN places at most {MAX_SUBJECTS} in one pass")
    ids = [s.id for s in subjects if s.id]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(f"Subject ids must be unique; repeated: {', '.join(dupes)}")
    for k, s in enumerate(subjects, start=1):
        name = f"subject {k}" + (f" ({s.id})" if s.id else "")
        kinds = [s.box is not None, s.mask is not None, s.box3d is not None]
        if sum(kinds) != 1:
            raise InputError(f"{name} needs exactly one placement: a box, a mask or a 3-D box")
        if s.box is not None:
            s.box.check(w, h, f"{name}'s box")
        if s.box3d is not None:
            s.box3d.check(f"{name}'s 3-D box")
        if s.mask is not None and s.mask.shape != (h, w):
            raise InputError(f"{name}'s mask is {s.mask.shape[1]}x{s.mask.shape[0]}, the output is {w}x{h}")
        if s.mask is not None and not s.mask.any():
            raise InputError(f"{name}'s mask is empty")
        if s.depth is not None:
            if s.mask is None:
                raise InputError(f"{name}: a depth map goes with a mask placement")
            if s.depth.shape != (h, w):
                raise InputError(f"{name}'s depth map is {s.depth.shape[1]}x{s.depth.shape[0]}, the output is {w}x{h}")


def regions(subjects: list[Subject], size: tuple[int, int], scene_depth: np.ndarray | None = None) -> SubjectRegions:
    """Each subject's region, whether it is precise, and the structure channel: depth inside the subjects, or the
    whole ``scene_depth`` map (uint8 [H, W], brighter = nearer) when one is given (SIGMA-GEN's full-scene depth
    variant)."""
    validate(subjects, size)
    if scene_depth is not None and scene_depth.shape != size:
        raise InputError(f"the scene depth map is {scene_depth.shape[1]}x{scene_depth.shape[0]}, the output is "
                         f"{size[1]}x{size[0]}")  # fmt: skip
    h, w = size
    masks, precise, depths = [], [], []
    for s in subjects:
        if s.box is not None:
            masks.append(s.box.mask(w, h))
            precise.append(False)
            depths.append(None)
        elif s.box3d is not None:
            m, z = s.box3d.project(w, h)
            masks.append(m)
            precise.append(False)
            depths.append(z)
        else:
            masks.append(s.mask.astype(bool))
            precise.append(True)
            depths.append(None)
    structure = np.zeros((h, w), dtype=np.uint8)
    zmaps = {k: _box_depth(s.box3d, masks[k], depths[k]) for k, s in enumerate(subjects) if s.box3d is not None}
    near = min((float(z[masks[k]].min()) for k, z in zmaps.items()), default=1.0)
    for k, (s, m) in enumerate(zip(subjects, masks, strict=True)):  # far to near is not needed: regions are painted
        if k in zmaps:  # 3-D boxes: per-pixel disparity of the box's surface, the nearest point brightest
            structure[m] = np.maximum(structure[m], np.rint(255 * near / zmaps[k][m]).astype(np.uint8))
        elif s.depth is not None:
            structure[m] = s.depth[m]
    if scene_depth is not None:
        structure = scene_depth.astype(np.uint8).copy()
    return SubjectRegions(masks, precise, structure, depths)


def _box_depth(box: Box3D, mask: np.ndarray, centre_z: float) -> np.ndarray:
    """The box's surface depth per pixel; the projected outline's edge pixels a ray just misses take the centre's."""
    z = box.depth_map(*mask.shape[::-1])
    return np.where(np.isfinite(z), z, centre_z)


def routing_maps(reg: SubjectRegions, step: int = ROUTING_STEP) -> tuple[np.ndarray, np.ndarray]:
    """(ascending, descending) uint8 routing maps: subject i -> step*i where visible, background 0."""
    check_routing(len(reg.regions), step)
    h, w = reg.structure.shape
    order = list(range(len(reg.regions)))
    maps = []
    for sequence in (order, order[::-1]):
        m = np.zeros((h, w), dtype=np.uint8)
        for i in [i for i in sequence if not reg.precise[i]] + [i for i in order if reg.precise[i]]:
            m[reg.regions[i]] = step * (i + 1)
        maps.append(m)
    return maps[0], maps[1]


def check_routing(count: int, step: int) -> None:
    """Subject ``count`` must fit the routing maps' 255 levels at ``step`` levels a subject."""
    if not 1 <= step <= 255:
        raise InputError(f"the routing step must be 1..255 (got {step})")
    if count * step > 255:
        raise InputError(f"{count} subjects given; this model's routing maps (step {step}) hold at most "
                         f"{255 // step}: place fewer subjects")  # fmt: skip


def spatial_control(reg: SubjectRegions, step: int = ROUTING_STEP) -> Image.Image:
    asc, desc = routing_maps(reg, step)
    return Image.fromarray(np.stack([asc, desc, reg.structure], axis=-1))


def identity_dictionary(subjects: list[Subject], tile: int = DEFAULT_TILE, max_rows: int = MAX_ROWS) -> Image.Image:
    """The subjects' images in ``tile`` x ``tile`` cells, in subject order top to bottom (SIGMA-GEN's stack).

    Each image keeps its aspect ratio (fitted into its cell, centred on black) instead of being stretched. Up to
    ``max_rows`` subjects form one column, as in the paper; more fill further columns, top to bottom then left to
    right, because the model shrinks a reference to a 1 024 px long edge: ten stacked cells would be ~100 px each,
    five rows keep them above 200 px.
    """
    columns = math.ceil(len(subjects) / max_rows)
    rows = math.ceil(len(subjects) / columns)
    canvas = Image.new("RGB", (tile * columns, tile * rows), (0, 0, 0))
    for k, s in enumerate(subjects):
        img = s.image.convert("RGB")
        scale = tile / max(img.size)
        fitted = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
        x, y = (k // rows) * tile, (k % rows) * tile
        canvas.paste(fitted, (x + (tile - fitted.width) // 2, y + (tile - fitted.height) // 2))
    return canvas


def subject_union(reg: SubjectRegions) -> np.ndarray:
    return np.logical_or.reduce(reg.regions)


@dataclass(frozen=True)
class Insertion:
    """Keep ``background`` (resized to the output) wherever ``keep`` [H, W] is True: by latent blending while
    sampling, then by pasting the original pixels back, feathered over ``feather`` pixels into the subjects."""

    background: Image.Image
    keep: np.ndarray
    feather: int = 8


def composite(generated: Image.Image, insertion: Insertion) -> Image.Image:
    """The background's own pixels wherever ``keep`` holds (exactly, not its autoencoder reconstruction), the
    generated picture inside the subjects, and a linear ramp over the first ``feather`` pixels inside them so the
    seam does not show."""

    w, h = generated.size
    bg = insertion.background.convert("RGB")
    bg = bg if bg.size == (w, h) else bg.resize((w, h), Image.BICUBIC)
    region = (~insertion.keep).astype(np.uint8)
    cv2 = opencv("SIGMA-GEN masks")
    inside = cv2.distanceTransform(region, cv2.DIST_L2, 3)  # pixels from the nearest kept pixel
    alpha = np.clip(1.0 - inside / max(1, insertion.feather), 0.0, 1.0)[..., None]  # 1 outside, 0 deep inside
    out = alpha * np.asarray(bg, dtype=np.float32) + (1 - alpha) * np.asarray(generated, dtype=np.float32)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
