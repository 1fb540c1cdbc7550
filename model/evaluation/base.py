"""What every metric sees and returns: one :class:`EvalRow` per generated image, one value (or None) per row.

A :class:`Metric` names its column, its table header, the hub model it uses, the paper setting it mirrors and the
protocol it follows (the whole image, or SIGMA-GEN's per-subject crops); ``compute(rows)`` returns one value per row,
None where the metric does not apply (no ground truth, no layout, no SIGMA-GEN subjects...).
Models reach the metrics through a :data:`ModelLoader`, ``loader(kind, model_id) -> (model, processor)``, so that
tests pass tiny random models and nothing is downloaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..request.prompt import PLACEHOLDER_RE
from ..request.tokens import ATTRIBUTE_TOKENS

ModelLoader = Callable[[str, str], tuple[Any, Any]]  # (kind, model_id) -> (model, processor or None)
Values = list[float | None]
SubjectValues = list[float | None]  # one value per subject of a row (None: that subject cannot be scored)
WHOLE_IMAGE = "whole image"  # the protocol of every metric that reads the whole picture
PER_SUBJECT_CROPS = "per-subject crops, SIGMA-GEN §4"  # each subject's crop against its reference, then the mean
PER_SUBJECT_REGIONS = "per-subject regions, SIGMA-GEN §4"  # inside each subject's region, then the mean


@dataclass(frozen=True)
class SubjectRegion:
    """One SIGMA-GEN subject of a row: where its spatial control placed it, and its identity image."""

    name: str  # the subject's name in the row's meta, e.g. "red star"
    mask: np.ndarray = field(repr=False, compare=False)  # bool [H, W], at the truth's size (else the control's)
    identity: Image.Image | None = field(default=None, repr=False, compare=False)  # its identity-sheet cell, trimmed

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        """(x0, y0, x1, y1) of the region, ends exclusive; None when the control shows none of it."""
        ys, xs = np.nonzero(self.mask)
        return None if xs.size == 0 else (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)

    @property
    def size(self) -> tuple[int, int]:
        """The frame's (width, height)."""
        return self.mask.shape[1], self.mask.shape[0]


@dataclass(frozen=True)
class EvalRow:
    """One generated image with what it is judged against."""

    row_id: str
    family: str  # task family (e.g. "compose"), "" if unknown
    output: Image.Image  # the generated image (RGB)
    target: Image.Image | None  # ground truth (RGB) if any
    prompt: str  # the prompt as given: attribute tokens and <imgN> placeholders may be present
    references: tuple[Image.Image, ...]  # the user references, in order
    layout: Image.Image | None  # the layout control image the model received (canny / depth / boxes), if any
    subjects: tuple[SubjectRegion, ...] | None = None  # a SIGMA-GEN row's subjects, in order (None: not such a row)


@dataclass(frozen=True)
class Metric:
    """A metric ready to run: ``compute(rows)`` gives one value per row (None: not applicable to that row)."""

    name: str  # column name, e.g. "clip_t"
    label: str  # table header, e.g. "CLIP-T"
    model: str | None  # the model it uses (None: no model)
    mirrors: str  # which paper's setting it mirrors, one line
    higher_is_better: bool
    score_rows: Callable[[list[EvalRow]], Values] = field(repr=False, compare=False)
    needs: str = ""  # what a row must carry for a value, e.g. "target" (else the value is None)
    protocol: str = WHOLE_IMAGE  # what is compared: the whole image, or each subject's crop / region
    # per-subject metrics: one list of values per row (None: a row without subjects); a row's value is their mean
    score_subjects: Callable[[list[EvalRow]], list[SubjectValues | None]] | None = field(
        default=None, repr=False, compare=False
    )

    def compute(self, rows: Sequence[EvalRow]) -> Values:
        return self.compute_all(rows)[0]

    def compute_all(self, rows: Sequence[EvalRow]) -> tuple[Values, list[SubjectValues | None]]:
        """(one value per row, the per-subject values of each row: None for a whole-image metric)."""
        rows = list(rows)
        if self.score_subjects is None:
            values, per = (self.score_rows(rows) if rows else []), [None] * len(rows)
        else:
            per = self.score_subjects(rows) if rows else []
            values = [subject_mean(p) for p in per]
        assert len(values) == len(per) == len(rows), f"{self.name} returned {len(values)} values for {len(rows)} rows"
        per = [None if p is None else [finite(v) for v in p] for p in per]
        return [None if v is None else float(v) for v in values], per


def finite(value) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def subject_mean(values: SubjectValues | None) -> float | None:
    """The mean over the subjects that have a finite value (None when none has)."""
    kept = [v for v in (finite(v) for v in values or ()) if v is not None]
    return float(np.mean(kept)) if kept else None


def text_prompt(prompt: str) -> str:
    """The prompt as plain text for text metrics: image placeholders and attribute tokens removed."""
    text = PLACEHOLDER_RE.sub(" ", prompt)
    for token in ATTRIBUTE_TOKENS:
        text = text.replace(token, " ")
    return " ".join(text.split())


def unit_tensor(img: Image.Image) -> torch.Tensor:
    """PIL -> float32 [3, H, W] in [0, 1]."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


def fit(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``img`` in RGB at ``size`` (width, height); unchanged when it already has that size."""
    img = img.convert("RGB")
    return img if img.size == size else img.resize(size, Image.BICUBIC)


def truth_groups(rows: Sequence[EvalRow]) -> list[tuple[Image.Image, ...]]:
    """What each row's output is compared with by the image-similarity metrics: the ground truth when there is
    one, else every reference (the value is then the mean over the references); empty when neither exists."""
    return [(row.target,) if row.target is not None else tuple(row.references) for row in rows]


def mean_similarity(rows: Sequence[EvalRow], embed: Callable[[list[Image.Image]], torch.Tensor]) -> Values:
    """Cosine similarity of each output with its :func:`truth_groups` images, averaged over the group.

    Args:
        rows: the rows.
        embed: images -> unit-length embeddings, (N, D); images of any sizes, in one list.
    Returns:
        one value per row, None where the row has neither ground truth nor references.
    """
    groups = truth_groups(rows)
    if not any(groups):
        return [None] * len(rows)
    feats = embed([row.output for row in rows] + [img for group in groups for img in group])
    outputs, others = feats[: len(rows)], feats[len(rows) :]  # (R, D), (sum of group sizes, D)
    values: Values = []
    start = 0
    for i, group in enumerate(groups):
        if not group:
            values.append(None)
            continue
        values.append(float((others[start : start + len(group)] @ outputs[i]).mean()))
        start += len(group)
    return values
