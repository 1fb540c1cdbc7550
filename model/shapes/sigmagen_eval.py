"""The SIGMA-GEN evaluation of the shapes world: is every subject where its structure put it, once, with its own
shape and colour, and is the nearer subject the visible one where two overlap?

Held-out scenes of 2-5 things (``sigma sigmagen train`` writes ``eval/N.parquet``) are generated from their
identity sheet and spatial control. Each row's meta lists the things in drawing order (later ones are nearer and
cover earlier ones) with shape, colour and box, so the evaluation knows every thing's visible pixels, and how each
subject was placed (by a box or a mask). The whole picture is read (:mod:`.scene_reader`): a subject is right when
its colour, its shape (with a minimum fit), its place (IoU >= 0.5 with its box, or with its mask when a mask placed
it) are right and no stray object of its colour is drawn elsewhere; an object of a colour no subject has, drawn mostly
where no thing is, is an extra object of the scene. Subjects with under a quarter of their area (or 30 px) visible
are not scored.

Ordering: for every pair that overlaps by 20 px or more, with different colours, the overlap must show the nearer
thing's colour.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..config import ROUTING_STEP, SHEET_ROWS
from ..errors import InputError
from .scene_reader import colour_names, score_scene
from .world import COLOURS, SHAPES

log = logging.getLogger(__name__)

__all__ = ["colour_names", "evaluate_sigmagen", "read_scenes", "score_scene", "summarise"]


def summarise(records: list[dict]) -> dict[str, dict]:
    """Per subject count: subjects right (and colour, shape, place, alone), scenes with every subject right and no
    extra object, extra objects, ordering."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[str(len(r["meta"]["layers"]))].append(r)
    out = {}
    for n, rows in sorted(groups.items()) + [("all", records)]:
        scored = [s for r in rows for s in r["verdict"]["subjects"] if s["scored"]]
        pairs = [p for r in rows for p in r["verdict"]["pairs"]]
        rate = lambda xs, key: sum(bool(x.get(key)) for x in xs) / len(xs) if xs else float("nan")  # noqa: E731
        clean = [all(s["ok"] for s in r["verdict"]["subjects"] if s["scored"]) and not r["verdict"].get("extras")
                 for r in rows]  # fmt: skip
        out[n] = {
            "scenes": len(rows),
            "subjects": len(scored),
            "right": rate(scored, "ok"),
            "colour": rate(scored, "colour"),
            "shape": rate(scored, "shape"),
            "place": rate(scored, "place"),
            "alone": rate(scored, "alone"),
            "scenes_all_right": sum(clean) / max(1, len(rows)),
            "extras": sum(int(r["verdict"].get("extras", 0)) for r in rows),
            "pairs": len(pairs),
            "ordering": rate(pairs, "ok"),
        }
    return out


def routing_step_of(meta: dict) -> int:
    """The routing step a row's controls were drawn at (rows made before the option: the paper's 10)."""
    return int(meta.get("routing_step", ROUTING_STEP))


def _check_step(path: Path, meta: dict, arch) -> None:
    """A row's controls must be drawn at the routing step the model learnt, its sheet laid out as it learnt."""
    step = routing_step_of(meta)
    if step != arch.routing_step:
        raise InputError(f"{path} was drawn at routing step {step}, the model reads step {arch.routing_step}: evaluate "
                         "it on the eval/ rows of its own `sigma sigmagen train` run")  # fmt: skip
    rows = meta.get("sheet_rows", SHEET_ROWS)
    if rows != arch.sheet_rows:
        raise InputError(f"{path} lays its identity sheets out {rows} cells a column, the model reads "
                         f"{arch.sheet_rows}: evaluate it on rows drawn for that model")  # fmt: skip


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
    from .evaluate import generate_row, reconstructed_row

    config = config or GenerationConfig()
    scenes = read_scenes(eval_dir, per_count) if scenes is None else scenes
    for path, _, _, meta in scenes:  # every row before the first picture is generated
        _check_step(path, meta, pipe.arch)
    records = []
    for path, k, rec, meta in scenes:
        row_id = f"{path.stem}-{k:04d}"
        if reconstruct:  # an undecodable target is skipped and logged, as generate_row does for references
            result = reconstructed_row(pipe, row_id, rec)
        else:
            result = generate_row(pipe, row_id, rec, config.replace(seed=seed + k))
        if result is None:
            continue
        if save_dir is not None:
            save_png(result.image, Path(save_dir) / path.stem / f"{k:04d}.png")
        verdict = score_scene(result.image, meta["layers"], meta=meta)
        record = {"file": path.stem, "row": k, "meta": meta, "verdict": verdict, "seconds": result.seconds}
        records.append(record)
        if on_row is not None:
            on_row(record)
    return summarise(records), records
