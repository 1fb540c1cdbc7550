"""Metrics read from pixels: the shapes world's reading, PSNR / SSIM against the ground truth, edge F1 against the
layout, and depth MSE. All but depth MSE run offline with no model.

Every factory takes the same keywords (``loader``, ``cache_dir``, ``device``); the offline ones ignore them.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import MissingDependencyError
from ..images import opencv
from ..request.control import CANNY_HIGH, CANNY_LOW, DEFAULT_DEPTH_MODEL, canny_edges
from ..shapes import evaluate as shapes_eval
from ..shapes.world import COLOURS, GREY
from .base import EvalRow, Metric, ModelLoader, Values, fit, unit_tensor
from .loading import hub_loader

PSNR_CAP = 100.0  # dB: identical images (infinite PSNR) score this, so that means and JSON stay finite
EDGE_TOLERANCE = 2  # px: an edge pixel counts as matched when the other map has an edge this close (dilation)


def _torchmetrics_image():
    try:
        from torchmetrics.functional import image
    except ImportError:
        raise MissingDependencyError("torchmetrics", "eval", "PSNR and SSIM") from None
    return image


def _with_target(rows: list[EvalRow], fn) -> Values:
    """``fn(output at the target's size, target)`` for the rows that have a target; None elsewhere."""
    return [None if r.target is None else fn(fit(r.output, r.target.size), r.target.convert("RGB")) for r in rows]


# --- the shapes world ------------------------------------------------------------------------------------------


def _target_meta(target: Image.Image) -> dict | None:
    """What the target shows, in the form of a shapes row's ``meta`` (None when it shows no object)."""
    want = shapes_eval.read(target)
    if want.shape is None:
        return None
    background = GREY if want.background == "grey" else COLOURS[want.background]
    return {"shape": want.shape, "colour": want.colour, "box": want.box, "background": list(background)}


def shapes_verdict(output: Image.Image, target: Image.Image, family: str) -> dict:
    """:func:`model.shapes.evaluate.score` of ``output`` with the target's own reading as the row's meta.

    Returns the verdict dict (``ok`` is the family criterion of ``sigma shapes eval``; ``strict`` adds the colour,
    the background and the box fit). A target that shows no object wants an output that shows none either.
    """
    output = fit(output, target.size)
    meta = _target_meta(target)
    if meta is None:
        got = shapes_eval.read(output)
        same = got.shape is None
        return {"ok": same, "strict": same and got.background == shapes_eval.read(target).background}
    verdict = shapes_eval.score(output, meta, family)
    strict = verdict["shape"] and verdict["colour"] and verdict["background"] and verdict["fits"]
    return {**verdict, "strict": strict}


def shapes(**_) -> Metric:
    return Metric(
        name="shapes",
        label="Shapes",
        model=None,
        mirrors="the shapes world's pixel reading (`sigma shapes eval`): the family criterion, with the target's "
        "reading as the row's meta",
        higher_is_better=True,
        score_rows=lambda rows: _shapes(rows, "ok"),
        needs="target",
    )


def shapes_strict(**_) -> Metric:
    return Metric(
        name="shapes_strict",
        label="Shapes (strict)",
        model=None,
        mirrors="the shapes world's pixel reading: shape, colour and background right, and the object's box "
        f"overlapping the target's at IoU >= {shapes_eval.FIT_IOU}",
        higher_is_better=True,
        score_rows=lambda rows: _shapes(rows, "strict"),
        needs="target",
    )


def _shapes(rows: list[EvalRow], key: str) -> Values:
    return [None if r.target is None else float(shapes_verdict(r.output, r.target, r.family)[key]) for r in rows]


# --- against the ground truth -----------------------------------------------------------------------------------


def psnr(**_) -> Metric:
    image = _torchmetrics_image()

    def one(out: Image.Image, gt: Image.Image) -> float:
        value = float(image.peak_signal_noise_ratio(unit_tensor(out)[None], unit_tensor(gt)[None], data_range=1.0))
        return min(value, PSNR_CAP)

    return Metric(
        name="psnr",
        label="PSNR",
        model=None,
        mirrors=f"editing benchmarks' PSNR (dB) against the ground truth, torchmetrics, capped at {PSNR_CAP:g}",
        higher_is_better=True,
        score_rows=lambda rows: _with_target(rows, one),
        needs="target",
    )


def ssim(**_) -> Metric:
    image = _torchmetrics_image()

    def one(out: Image.Image, gt: Image.Image) -> float:
        a, b = unit_tensor(out)[None], unit_tensor(gt)[None]
        return float(image.structural_similarity_index_measure(a, b, data_range=1.0))

    return Metric(
        name="ssim",
        label="SSIM",
        model=None,
        mirrors="editing benchmarks' SSIM against the ground truth (torchmetrics, Gaussian 11 px window)",
        higher_is_better=True,
        score_rows=lambda rows: _with_target(rows, one),
        needs="target",
    )


# --- layout: edge F1 ----------------------------------------------------------------------------------------------


def is_edge_map(layout: Image.Image) -> bool:
    """A white-on-black picture of thin lines (a canny control), as opposed to depth or filled boxes."""
    cv2 = opencv("the pixel metrics")
    rgb = np.asarray(layout.convert("RGB"), dtype=np.int16)
    if np.abs(rgb - rgb[..., :1]).max() > 16:  # coloured (boxes)
        return False
    gray = rgb[..., 0]
    if ((gray < 32) | (gray > 223)).mean() < 0.95:  # not black and white (depth)
        return False
    white = (gray > 127).astype(np.uint8)
    core = cv2.erode(white, np.ones((3, 3), np.uint8))
    return int(core.sum()) <= 0.2 * int(white.sum())  # thin: lines vanish under a 3x3 erosion, filled areas do not


def layout_edges(layout: Image.Image) -> np.ndarray:
    """(H, W) bool edges of a layout control: the lines themselves for a canny control, Canny of it otherwise."""
    if is_edge_map(layout):
        return np.asarray(layout.convert("L")) > 127
    return np.asarray(canny_edges(layout).convert("L")) > 127


def edge_f1_value(output: Image.Image, layout: Image.Image, tolerance: int = EDGE_TOLERANCE) -> float:
    """F1 of Canny(output) against the layout's edges, each pixel matched within ``tolerance`` px.

    Both empty: 1.0; one empty: 0.0. The output is resized to the layout's size first.
    """
    cv2 = opencv("the pixel metrics")
    ref = layout_edges(layout)
    out = np.asarray(canny_edges(fit(output, layout.size), CANNY_LOW, CANNY_HIGH).convert("L")) > 127
    if not ref.any() or not out.any():
        return float(ref.any() == out.any())
    kernel = np.ones((2 * tolerance + 1, 2 * tolerance + 1), np.uint8)
    near_ref = cv2.dilate(ref.astype(np.uint8), kernel) > 0
    near_out = cv2.dilate(out.astype(np.uint8), kernel) > 0
    precision = float((out & near_ref).sum() / out.sum())
    recall = float((ref & near_out).sum() / ref.sum())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def edge_f1(**_) -> Metric:
    return Metric(
        name="edge_f1",
        label="Edge F1",
        model=None,
        mirrors=f"SIGMA's layout metric: Canny ({CANNY_LOW}/{CANNY_HIGH}, OpenCV) of the output against the layout "
        f"control's edges, F1 within {EDGE_TOLERANCE} px",
        higher_is_better=True,
        score_rows=lambda rows: [None if r.layout is None else edge_f1_value(r.output, r.layout) for r in rows],
        needs="layout",
    )


# --- depth MSE ----------------------------------------------------------------------------------------------------


def unit_depth(depth) -> np.ndarray:
    """A depth image or array -> (H, W) float64 stretched to 0..1 (relative depth has no absolute scale)."""
    d = np.asarray(depth.convert("L") if isinstance(depth, Image.Image) else depth, dtype=np.float64)
    d = d.mean(-1) if d.ndim == 3 else d
    span = d.max() - d.min()
    return (d - d.min()) / span if span > 0 else np.zeros_like(d)


def depth_mse(
    *, loader: ModelLoader | None = None, cache_dir: str | None = None, device: str = "cpu", model_id: str = ""
) -> Metric:
    model_id = model_id or DEFAULT_DEPTH_MODEL
    estimate, _ = (loader or hub_loader(cache_dir, device))("depth", model_id)

    def one(out: Image.Image, gt: Image.Image) -> float:
        a, b = unit_depth(estimate(out)), unit_depth(estimate(gt))
        if a.shape != b.shape:  # an estimator may answer at its own resolution
            a = np.asarray(Image.fromarray(a.astype(np.float32)).resize(b.shape[::-1], Image.BILINEAR))
        return float(((a - b) ** 2).mean())

    return Metric(
        name="depth_mse",
        label="Depth MSE",
        model=model_id,
        mirrors="SIGMA-GEN's depth MSE: the --depth estimator's depth of the output against that of the ground "
        "truth, each stretched to 0..1",
        higher_is_better=False,
        score_rows=lambda rows: _with_target(rows, one),
        needs="target",
    )
