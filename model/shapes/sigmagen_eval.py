"""The SIGMA-GEN evaluation of the shapes world: is every subject where its structure put it, with its own shape
and colour, and is the nearer subject the visible one where two overlap?

Held-out scenes of 2-5 things (``sigma sigmagen train`` writes ``eval/N.parquet``) are generated from their
identity sheet and spatial control. Each row's meta lists the things in drawing order (later ones are nearer and
cover earlier ones) with shape, colour and box, so the evaluation knows every thing's visible pixels. Per subject:

* colour: the majority colour (nearest of the world's eight, or the grey background) over its visible pixels;
* shape: inside its box, the pixels of its colour are compared with each shape's template there (minus what
  nearer things cover); the best overlap must be its own shape;
* a subject is right when both hold. Subjects with under a quarter of their area (or 30 px) visible are not
  scored: nothing of their shape is left to read.

Ordering: for every pair that overlaps by 20 px or more, with different colours, the overlap must show the nearer
thing's colour.
"""

from __future__ import annotations

import io
import logging
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from ..config import ROUTING_STEP
from ..errors import InputError
from .world import CANVAS, COLOURS, GREY, SHAPES, mask

log = logging.getLogger(__name__)
NAMES = (*COLOURS, "grey")
PALETTE = np.array([*COLOURS.values(), GREY], dtype=np.float32)
MIN_VISIBLE = (0.25, 30)  # share of the thing's area, and pixels
MIN_OVERLAP = 20


def colour_names(img: Image.Image, canvas: int = CANVAS) -> np.ndarray:
    """[H, W] index into NAMES of each pixel's nearest colour (the picture looked at ``canvas`` px square)."""
    px = np.asarray(img.convert("RGB").resize((canvas, canvas), Image.BILINEAR), dtype=np.float32)
    return ((px[:, :, None, :] - PALETTE[None, None]) ** 2).sum(-1).argmin(-1)


def _masks(layers: list[dict], canvas: int) -> list[np.ndarray]:
    return [np.asarray(mask(t["shape"], tuple(t["box"]), canvas=canvas)) > 127 for t in layers]


def _covered(masks: list[np.ndarray], k: int) -> np.ndarray:
    """What the things drawn after thing ``k`` cover."""
    return np.logical_or.reduce(masks[k + 1 :]) if k + 1 < len(masks) else np.zeros_like(masks[k])


def score_scene(img: Image.Image, layers: list[dict], canvas: int = CANVAS) -> dict:
    """Per-subject verdicts and per-pair ordering verdicts of one generated picture."""
    names = colour_names(img, canvas)
    masks = _masks(layers, canvas)
    subjects = []
    for k, thing in enumerate(layers):
        covered = _covered(masks, k)
        visible = masks[k] & ~covered
        if visible.sum() < max(MIN_VISIBLE[0] * masks[k].sum(), MIN_VISIBLE[1]):
            subjects.append({"thing": k, "scored": False})
            continue
        want = NAMES.index(thing["colour"])
        colour_ok = int(np.bincount(names[visible], minlength=len(NAMES)).argmax()) == want
        shape_ok = _shape_of(names == want, thing["box"], covered, canvas) == thing["shape"]
        subjects.append({"thing": k, "scored": True, "colour": colour_ok, "shape": shape_ok})
        subjects[-1]["ok"] = subjects[-1]["colour"] and subjects[-1]["shape"]
    pairs = []
    for i in range(len(layers)):
        for j in range(i + 1, len(layers)):
            overlap = masks[i] & masks[j] & ~_covered(masks, j)
            if overlap.sum() >= MIN_OVERLAP and layers[i]["colour"] != layers[j]["colour"]:
                shown = int(np.bincount(names[overlap], minlength=len(NAMES)).argmax())
                pairs.append({"behind": i, "front": j, "ok": shown == NAMES.index(layers[j]["colour"])})
    return {"subjects": subjects, "pairs": pairs}


def _shape_of(own: np.ndarray, box, covered: np.ndarray, canvas: int) -> str:
    """The shape whose template, in ``box`` and minus what nearer things cover, best overlaps ``own``."""
    x, y, w, h = box
    region = np.zeros_like(own)
    region[max(0, int(y) - 2) : int(y + h) + 2, max(0, int(x) - 2) : int(x + w) + 2] = True
    seen = own & region & ~covered
    best, best_iou = SHAPES[0], -1.0
    for shape in SHAPES:
        tmpl = (np.asarray(mask(shape, tuple(box), canvas=canvas)) > 127) & ~covered
        iou = (tmpl & seen).sum() / max(1, (tmpl | seen).sum())
        if iou > best_iou:
            best, best_iou = shape, iou
    return best


def summarise(records: list[dict]) -> dict[str, dict]:
    """Per subject count: subjects right (and colour, shape), scenes with every subject right, ordering."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[str(len(r["meta"]["layers"]))].append(r)
    out = {}
    for n, rows in sorted(groups.items()) + [("all", records)]:
        scored = [s for r in rows for s in r["verdict"]["subjects"] if s["scored"]]
        pairs = [p for r in rows for p in r["verdict"]["pairs"]]
        rate = lambda xs, key: sum(x[key] for x in xs) / len(xs) if xs else float("nan")  # noqa: E731
        out[n] = {
            "scenes": len(rows),
            "subjects": len(scored),
            "right": rate(scored, "ok"),
            "colour": rate(scored, "colour"),
            "shape": rate(scored, "shape"),
            "scenes_all_right": sum(all(s["ok"] for s in r["verdict"]["subjects"] if s["scored"]) for r in rows)
            / max(1, len(rows)),
            "pairs": len(pairs),
            "ordering": rate(pairs, "ok"),
        }
    return out


def routing_step_of(meta: dict) -> int:
    """The routing step a row's controls were drawn at (rows made before the option: the paper's 10)."""
    return int(meta.get("routing_step", ROUTING_STEP))


def _check_step(path: Path, meta: dict, model_step: int) -> None:
    """A row's controls must be drawn at the routing step the model learnt."""
    step = routing_step_of(meta)
    if step != model_step:
        raise InputError(f"{path} was drawn at routing step {step}, the model reads step {model_step}: evaluate it on "
                         "the eval/ rows of its own `sigma sigmagen train` run")  # fmt: skip


def reconstruction(pipe, img: Image.Image) -> Image.Image:
    """``img`` encoded (posterior mean) and decoded by the model's autoencoder."""
    import torch

    from ..images import to_pil, to_tensor

    with torch.no_grad():
        return to_pil(pipe.vae.decode(pipe.vae.encode(to_tensor(img.convert("RGB"))[None]))[0])


def _layers_ok(layers) -> bool:
    """Whether a row's meta ``layers`` lists things the scorer can draw: known shape and colour, a finite box."""
    return isinstance(layers, list) and all(
        isinstance(t, dict) and t.get("shape") in SHAPES and t.get("colour") in COLOURS
        and isinstance(t.get("box"), list) and len(t["box"]) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in t["box"])
        for t in layers
    )  # fmt: skip


def read_scenes(eval_dir: str | Path, per_count: int | None = None) -> list[tuple[Path, int, dict, dict]]:
    """The held-out scenes of ``eval_dir`` (``N.parquet`` files) as (file, row, record, meta), read and checked
    before any model runs: a file that is not such parquet is refused with one line naming it; a row without its
    pictures or its things' layers is skipped and logged. Raises InputError when no usable scene is left."""
    import pyarrow.parquet as pq

    from .evaluate import load_meta

    files = sorted(Path(eval_dir).glob("*.parquet")) if Path(eval_dir).is_dir() else []
    if not files:
        raise InputError(f"--data {eval_dir} holds no N.parquet files; `sigma sigmagen train` writes them under eval/")
    scenes, skipped = [], 0
    for path in files:
        try:
            table = pq.read_table(path, columns=["instruction_list", "image_list", "meta"]).to_pylist()
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many error types for a broken or foreign file
            raise InputError(f"--data: {path} is not a SIGMA-GEN eval file ({str(exc).splitlines()[0]}); pass the "
                             "eval/ folder `sigma sigmagen train` writes") from None  # fmt: skip
        for k, rec in enumerate(table[:per_count]):
            try:
                meta = load_meta(rec["meta"])
                if not (isinstance(meta, dict) and rec["image_list"] and _layers_ok(meta.get("layers"))):
                    raise ValueError("no pictures, or no valid 'layers' (shape, colour, box) in its meta")
            except (TypeError, ValueError) as exc:
                log.warning("%s row %d skipped: %s", path, k, exc)
                skipped += 1
                continue
            scenes.append((path, k, rec, meta))
    if not scenes:
        raise InputError(
            f"--data {eval_dir}: none of its {skipped} rows is a usable scene (each needs its pictures and its "
            "things' layers in meta); pass the eval/ folder of `sigma sigmagen train`"
        )
    return scenes


def evaluate_sigmagen(
    pipe, eval_dir: str | Path, *, per_count: int | None = None, config=None, seed: int = 0, save_dir=None, on_row=None,
    reconstruct: bool = False, scenes: list | None = None,
) -> tuple[dict[str, dict], list[dict]]:  # fmt: skip
    """Generate every held-out scene of ``eval_dir`` (``N.parquet`` files) from its identity sheet and spatial
    control, with the row's own instruction, and score it. Row ``k`` of a file uses seed ``seed + k``.

    ``scenes``: what :func:`read_scenes` returned for ``eval_dir`` (read here when None). ``reconstruct`` scores
    each scene's true picture after the model's autoencoder instead (encode, decode): the ceiling the autoencoder
    puts on these figures, whatever the generator does."""
    from ..config import GenerationConfig
    from ..images import save_png
    from .evaluate import generate_row

    config = config or GenerationConfig()
    scenes = read_scenes(eval_dir, per_count) if scenes is None else scenes
    for path, _, _, meta in scenes:  # every row before the first picture is generated
        _check_step(path, meta, pipe.arch.routing_step)
    records = []
    for path, k, rec, meta in scenes:
        if reconstruct:
            try:
                truth = Image.open(io.BytesIO(rec["image_list"][-1]))
            except OSError as exc:  # an undecodable target: skipped and logged, as generate_row does for references
                log.warning("%s row %d skipped: its target picture is unreadable (%s)", path, k, exc)
                continue
            result = SimpleNamespace(image=reconstruction(pipe, truth), seconds=0.0)
        else:
            result = generate_row(pipe, f"{path.stem}-{k:04d}", rec, config.replace(seed=seed + k))
        if result is None:
            continue
        if save_dir is not None:
            save_png(result.image, Path(save_dir) / path.stem / f"{k:04d}.png")
        record = {"file": path.stem, "row": k, "meta": meta, "verdict": score_scene(result.image, meta["layers"]),
                  "seconds": result.seconds}  # fmt: skip
        records.append(record)
        if on_row is not None:
            on_row(record)
    return summarise(records), records
