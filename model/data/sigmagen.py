"""SIGMA-GEN training rows from annotated pictures: each row is [identity sheet, spatial control, target].

A scene (:class:`Scene`) is a picture with per-instance masks (and optionally a depth map, a caption and a caption
of its background alone). Its subjects (the largest instances, up to ``max_subjects``) become the identity sheet
(:func:`model.request.multisubject.identity_dictionary`) and the spatial control (routing maps and structure,
:func:`model.request.multisubject.spatial_control`), built as inference builds them; the picture itself is the
target, never changed. The training-time choices are named options (:class:`SigmaGenOptions`), the paper's values by
default, drawn per row in :mod:`model.data.sigmagen_draw`: one structure input a row (2-D box, 3-D box or
mask + depth), masks and boxes loosened, one control channel dropped now and then, identities from a folder of
prepared (reposed) ones or else cropped from the target, and the full caption or a background-only prompt.
Inputs: COCO-style instance annotations (:func:`coco_scenes`), or the shapes world's multi-object scenes
(:func:`model.shapes.scenes.shapes_scenes`). :func:`rows` counts every draw; :func:`summary_lines` says them.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterator

import numpy as np
from PIL import Image

from ..errors import InputError
from ..request.multisubject import identity_dictionary, regions, spatial_control
from .coco import coco_scenes
from .dataset import Example
from .scene import Instance, Scene
from .sigmagen_draw import SceneSkipped, draw_precision, drop_channel, identity, place, prompt
from .sigmagen_options import CHANNELS, DRAWS, PAPER_PRECISIONS, PRECISIONS, SigmaGenOptions

__all__ = ["CHANNELS", "DRAWS", "PAPER_PRECISIONS", "PRECISIONS", "Instance", "Scene", "SigmaGenOptions",
           "coco_scenes", "identity_warning", "rows", "scene_row", "summary_lines"]  # fmt: skip
log = logging.getLogger(__name__)


def _kept(scene: Scene, opts: SigmaGenOptions) -> list[Instance]:
    """The largest instances covering ``min_area``, at most ``max_subjects`` (the options guarantee the routing
    maps can tell them apart)."""
    area = scene.image.width * scene.image.height
    kept = sorted((i for i in scene.instances if i.mask.sum() >= opts.min_area * area), key=lambda i: -i.mask.sum())
    if not kept:
        raise SceneSkipped(f"no instance covers {opts.min_area:.1%} of the picture")
    return kept[: opts.max_subjects]


def scene_row(scene: Scene, opts: SigmaGenOptions, rng: random.Random) -> Example:
    """One training row: [identity sheet, spatial control, target] and an instruction in the released data's
    placeholder form (the target, the last image, is not named). Its meta says every draw; a scene that cannot
    give a row raises InputError (:class:`SceneSkipped` with a reason that can be counted)."""
    kept = _kept(scene, opts)
    kinds = draw_precision(scene, kept, opts, rng)
    tally: Counter = Counter()
    subjects = []
    for k, (inst, kind) in enumerate(zip(kept, kinds, strict=True)):
        image, prepared = identity(scene, inst, opts, rng)
        tally["prepared" if prepared else "cropped"] += 1
        # ids must be unique: two instances of one class are subject 1 and 2
        subjects.append(place(scene, inst, kind, image, f"{k + 1}:{inst.name}", opts, rng, tally))
    size = (scene.image.height, scene.image.width)
    whole = scene.depth if scene.depth is not None and rng.random() < opts.full_depth else None
    try:
        control = np.asarray(spatial_control(regions(subjects, size, whole), opts.routing_step)).copy()
    except InputError as exc:  # e.g. a 3-D box partly behind the camera
        log.warning("scene %s: %s", scene.scene_id, exc)
        raise SceneSkipped("its structure could not be drawn (see the log)") from None
    dropped = drop_channel(control, opts, rng)
    text, form, source = prompt(scene, kept, opts, rng)
    instruction = f"<subject>these subjects <image_1> <layout>arranged like <image_2> {text}"
    meta = {
        "scene": scene.scene_id, "subjects": [i.name for i in kept], "form": form, "prompt_source": source,
        "precision": kinds, "dropped": dropped, "full_depth": whole is not None,
        "identities": {k: tally[k] for k in ("prepared", "cropped")},
        "augment": {k: tally[k] for k in ("masks dilated", "boxes dilated", "boxes aspect-jittered")},
        "routing_step": opts.routing_step,
        "sheet_rows": opts.sheet_rows,
    }  # fmt: skip
    sheet = identity_dictionary(subjects, opts.tile, opts.sheet_rows)
    return Example("sigmagen", instruction, [sheet, Image.fromarray(control), scene.image], meta | scene.extra)


def rows(scenes: Iterator[Scene | tuple[str, str]], opts: SigmaGenOptions, stats: dict) -> Iterator[Example]:
    """Rows of every usable scene; a scene that cannot be used is skipped, counted in ``stats`` (by reason) and
    logged. ``stats`` also counts every draw of the rows written (see :func:`summary_lines`)."""
    rng = random.Random(opts.seed)
    for scene in scenes:
        if isinstance(scene, tuple):  # (scene id, why it could not be read)
            _skip(stats, *scene)
            continue
        try:
            row = scene_row(scene, opts, rng)
        except InputError as exc:
            _skip(stats, scene.scene_id, str(exc))
            continue
        _tally(stats, row.meta)
        yield row


def _skip(stats: dict, scene_id: str, reason: str) -> None:
    stats["skipped"] = stats.get("skipped", 0) + 1
    stats.setdefault("skipped_by", Counter())[reason] += 1
    log.warning("scene %s skipped: %s", scene_id, reason)


def _tally(stats: dict, meta: dict) -> None:
    stats["rows"] = stats.get("rows", 0) + 1
    count = lambda name: stats.setdefault(name, Counter())  # noqa: E731
    count("prompts")[(meta["form"], meta["prompt_source"])] += 1
    count("dropped")[meta["dropped"] or "none"] += 1
    kinds = set(meta["precision"])
    count("precision")[kinds.pop() if len(kinds) == 1 else "mixed"] += 1
    count("augment").update(meta["augment"])
    count("identities").update(meta["identities"])
    count("full_depth")[meta["full_depth"]] += 1


def summary_lines(stats: dict, opts: SigmaGenOptions) -> list[str]:
    """What every draw gave over the rows written (``stats`` of :func:`rows`), one line a choice."""
    n = stats.get("rows", 0)
    c = lambda name: stats.get(name, Counter())  # noqa: E731
    p = c("prompts")
    compose, background = (sum(v for (form, _), v in p.items() if form == f) for f in ("compose", "background"))
    lines = [
        f"prompts: {compose} full caption ({p['compose', 'data']} the data's, {p['compose', 'names']} made of the "
        f"subjects' names), {background} background-only ({p['background', 'data']} the data's, "
        f"{p['background', 'generic']} the generic '{opts.background_prompt}')",
        f"channel drop: {n - c('dropped')['none']} rows with one channel zeroed ("
        + ", ".join(f"{c('dropped')[ch]} {ch}" for ch in CHANNELS) + f"), {c('dropped')['none']} whole",
        f"precision (one per {opts.precision_draw}): "
        + ", ".join(f"{v} {k}" for k, v in sorted(c("precision").items())) + " rows",
        "structure loosened: " + ", ".join(f"{c('augment')[k]} {k}" for k in ("masks dilated", "boxes dilated",
                                                                              "boxes aspect-jittered"))
        + " (3-D boxes as given; targets never changed)",
        f"identities: {c('identities')['prepared']} prepared, {c('identities')['cropped']} cropped from the target",
    ]  # fmt: skip
    if c("full_depth")[True]:
        lines.append(f"whole-scene depth: {c('full_depth')[True]} rows")
    if stats.get("skipped_by"):
        lines.append("scenes skipped: " + ", ".join(f"{v} × {k}" for k, v in stats["skipped_by"].most_common()))
    return lines


def identity_warning(stats: dict) -> str:
    """A warning when identities were cropped from the targets ("" when every identity was prepared)."""
    ids = stats.get("identities", Counter())
    cropped, total = ids["cropped"], ids["cropped"] + ids["prepared"]
    if not cropped:
        return ""
    return (f"{cropped} of {total} identities are crops of their own target picture, so the model can learn to paste "
            "them instead of placing the subject: give --identities DIR with reposed, relit identities "
            "(DIR/<scene id>/<instance key>.png, docs/SIGMAGEN.md)")  # fmt: skip
