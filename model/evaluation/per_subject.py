"""SIGMA-GEN's per-subject metrics: identity preservation on each subject's crop, depth inside each subject's region.

The whole-image metrics (``dinov2``, ``siglip_i``, ``clip_i``, ``depth_mse``) judge the picture as a whole; these
judge each subject of a SIGMA-GEN row (:class:`.base.SubjectRegion`, placed by the row's spatial control, see
:mod:`.subjects`) and average over the row's subjects:

* ``dinov2_subjects`` / ``siglip_i_subjects`` / ``clip_i_subjects``: the cosine of the output's crop at the
  subject's box (its region's bounding box, at the ground truth's size) with the ground truth's crop at the same box;
  without a ground truth, with the subject's cell of the identity sheet (the identity image the model was given);
* ``depth_mse_subjects``: the depth of the whole output and of the whole ground truth (each stretched to 0..1, as
  ``depth_mse``), their squared difference averaged over the subject's region.

A row without subjects (not a SIGMA-GEN row, or its meta not read) gets None; a subject its control does not show
gets None and is left out of its row's mean.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from ..request.control import DEFAULT_DEPTH_MODEL
from .base import (
    PER_SUBJECT_CROPS,
    PER_SUBJECT_REGIONS,
    EvalRow,
    Metric,
    ModelLoader,
    SubjectValues,
    fit,
    subject_mean,
)
from .embedding import CLIP_MODEL, DINOV2_MODEL, SIGLIP_MODEL, load_encoder
from .loading import hub_loader
from .pixel import unit_depth

Pair = tuple[Image.Image, Image.Image]  # (the output's crop, what it is compared with)


def subject_pairs(row: EvalRow) -> list[Pair | None] | None:
    """Per subject, (the output's crop at its box, the truth's crop at the same box or else its identity image);
    None for a subject without a region or a reference; None for a row without subjects."""
    if row.subjects is None:
        return None
    size = row.subjects[0].size
    output = fit(row.output, size)
    target = fit(row.target, size) if row.target is not None else None
    pairs: list[Pair | None] = []
    for subject in row.subjects:
        box = subject.box
        reference = subject.identity if target is None or box is None else target.crop(box)
        pairs.append(None if box is None or reference is None else (output.crop(box), reference))
    return pairs


def subject_similarity(rows: list[EvalRow], embed: Callable[[list[Image.Image]], torch.Tensor]) -> list:
    """Per row, the cosine of each subject's pair (:func:`subject_pairs`); every crop embedded in one list."""
    pairs = [subject_pairs(row) for row in rows]
    images = [img for row_pairs in pairs for pair in row_pairs or () if pair is not None for img in pair]
    feats = embed(images) if images else None  # (2 x pairs, D): output crop, then its reference
    out: list[SubjectValues | None] = []
    i = 0
    for row_pairs in pairs:
        if row_pairs is None:
            out.append(None)
            continue
        values: SubjectValues = []
        for pair in row_pairs:
            if pair is None:
                values.append(None)
                continue
            values.append(float(feats[i] @ feats[i + 1]))
            i += 2
        out.append(values)
    return out


def _at(depth: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A depth array at ``shape`` (H, W): an estimator may answer at its own resolution."""
    if depth.shape == shape:
        return depth
    return np.asarray(Image.fromarray(depth.astype(np.float32)).resize(shape[::-1], Image.BILINEAR), np.float64)


def subject_depth_errors(rows: list[EvalRow], estimate) -> list[SubjectValues | None]:
    """Per row with subjects and a ground truth, the depth MSE inside each subject's region (None elsewhere)."""
    out: list[SubjectValues | None] = []
    for row in rows:
        if row.subjects is None or row.target is None:
            out.append(None)
            continue
        size = row.subjects[0].size
        shape = size[::-1]
        a = _at(unit_depth(estimate(fit(row.output, size))), shape)
        b = _at(unit_depth(estimate(fit(row.target, size))), shape)
        err = (a - b) ** 2
        out.append([float(err[s.mask].mean()) if s.mask.any() else None for s in row.subjects])
    return out


def _metric(name: str, label: str, model: str, mirrors: str, score, higher: bool, protocol: str) -> Metric:
    return Metric(
        name=name,
        label=label,
        model=model,
        mirrors=mirrors,
        higher_is_better=higher,
        score_rows=lambda rows: [subject_mean(p) for p in score(rows)],
        needs="subjects",
        protocol=protocol,
        score_subjects=score,
    )


CROPS = ("cosine of each subject's crop of the output (its region's box) with the same crop of the ground truth (no "
         "truth: its identity-sheet cell), averaged over the row's subjects")  # fmt: skip


def _crop_metric(name: str, label: str, kind: str, model_id: str, paper: str, *opts) -> Metric:
    """A per-subject image cosine metric; ``opts``: loader, cache_dir, device."""
    encoder = load_encoder(kind, model_id, *opts)
    score = lambda rows: subject_similarity(rows, encoder.images)  # noqa: E731
    return _metric(name, label, model_id, f"{paper} {CROPS}", score, True, PER_SUBJECT_CROPS)


def dinov2_subjects(*, loader=None, cache_dir=None, device="cpu", model_id: str = DINOV2_MODEL) -> Metric:
    paper = "SIGMA-GEN's DINO-I per subject: DINOv2 ViT-S/14 [CLS]"
    return _crop_metric("dinov2_subjects", "DINOv2-I (subjects)", "dinov2", model_id, paper, loader, cache_dir, device)


def siglip_i_subjects(*, loader=None, cache_dir=None, device="cpu", model_id: str = SIGLIP_MODEL) -> Metric:
    paper = "SIGMA-GEN's SigLIP-I per subject: SigLIP image"
    return _crop_metric("siglip_i_subjects", "SigLIP-I (subjects)", "siglip", model_id, paper, loader, cache_dir,
                        device)  # fmt: skip


def clip_i_subjects(*, loader=None, cache_dir=None, device="cpu", model_id: str = CLIP_MODEL) -> Metric:
    paper = "CLIP-I per subject, beside SIGMA-GEN's DINO-I and SigLIP-I: CLIP image"
    return _crop_metric("clip_i_subjects", "CLIP-I (subjects)", "clip", model_id, paper, loader, cache_dir, device)


def depth_mse_subjects(
    *, loader: ModelLoader | None = None, cache_dir: str | None = None, device: str = "cpu", model_id: str = ""
) -> Metric:
    model_id = model_id or DEFAULT_DEPTH_MODEL
    estimate, _ = (loader or hub_loader(cache_dir, device))("depth", model_id)
    mirrors = ("SIGMA-GEN's depth MSE inside the subjects: the --depth estimator's depth of the output and of the "
               "ground truth, each stretched to 0..1 over the whole picture, squared difference averaged over each "
               "subject's region, then over the row's subjects")  # fmt: skip
    score = lambda rows: subject_depth_errors(rows, estimate)  # noqa: E731
    return _metric("depth_mse_subjects", "Depth MSE (subjects)", model_id, mirrors, score, False, PER_SUBJECT_REGIONS)
