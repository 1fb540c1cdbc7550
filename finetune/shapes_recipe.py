"""The one-command recipe that trains the shipped ``shapes`` model from nothing on a CPU.

    sigma shapes train --out runs/shapes            # every stage; rerun the same command to continue

Stages, each skipped when its output exists and each resumable:

1. ``data/``: the world as SIGMA-format parquet (:func:`model.shapes.tasks.make_world`), SIGMA-GEN's rows beside the
   five families (``train/sigmagen.parquet``) and its held-out scenes (``sigmagen-eval/``);
2. ``autoencoder/``: the toy FLUX autoencoder (:mod:`finetune.autoencoder`; 4x, so 8 x 8 latent tokens a 64 px
   picture) on pictures of every kind the model meets, with its latent scale measured;
3. ``base/``: a model directory of the ``shapes`` architecture with the world's tokenizer and that autoencoder;
4. ``train/``: ``sigma finetune`` itself (the :class:`~finetune.trainer.Trainer`) from a fresh initialisation
   (``init="random"``) on the training rows, every step a shuffled mix of all six kinds;
5. ``decoder/``: the autoencoder's decoder finetuned (encoder and latent scaling frozen, so the MoT's latents keep
   their meaning) on targets of every kind, coloured canvases weighed up (:data:`DECODER_MIX`): the base
   autoencoder drew a coloured background's edge grey, so a background row could not be read right even as the
   target itself passed through it (``--decoder-steps 0``: none);
6. ``mot/``: the MoT's final EMA weights exported in float16 with that autoencoder;
7. ``curriculum/``: SIGMA-GEN's curriculum (:mod:`finetune.sigmagen_recipe`, 5 000 steps) from ``mot/``, half of its
   rows SIGMA's five families (``--curriculum-replay``), so that it does not forget them;
8. ``average/``: the average of ``mot/`` and the curriculum's model (``--curriculum-weight`` of the latter;
   :func:`finetune.checkpoint.average_models`). Measured on 100 held-out rows a family (docs/SHAPES.md), the
   curriculum alone raised compose and select and lowered text; the average keeps most of the gains and most of
   text. With ``--curriculum-weight 0`` or no SIGMA-GEN rows, stages 7-8 do not run;
9. ``balance/`` (the background stage, added 2026-12-06): that average finetuned for ``--balance-steps`` on fresh
   rows of the five families and SIGMA-GEN (``data/balance/``, world seed + 11), background's trained on five
   times as often (:data:`~finetune.shapes_config.BALANCE_WEIGHTS`): background rows are the fewest in the MoT's mix
   and 3 000 steps of them alone took background from 13 % to 62 %;
10. ``model/`` (what ``--model shapes`` loads): the average of the model stage 9 started from and its finetune
   (``--balance-weight`` of the latter). Each stage's model goes to ``model/`` when no later stage runs
   (``ShapesRecipe.stage_outputs``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from sigma_studio.model.errors import InputError
from sigma_studio.model.files import check_output_dir, write_json

from .checkpoint import average_models, export, trained_steps
from .shapes_config import DECODER_MIX, Report, ShapesRecipe
from .shapes_stages import (
    balance_stage,
    check_base,
    decoder_stage,
    file_sha256,
    make_base,
    make_data,
    read_record,
)

__all__ = ["DECODER_MIX", "ShapesRecipe", "check_base", "run"]

log = logging.getLogger(__name__)


def run(recipe: ShapesRecipe, report: Report = lambda stage, msg: None, on_step=None) -> Path:
    """Run (or continue) every stage; returns the exported model directory. ``timings.json`` holds each stage's
    seconds summed over the invocations that finished it or found it done (a resumed stage adds what it still took,
    a stage done earlier about 0; the part of a stage that an interrupted invocation ran is not counted)."""
    out = Path(recipe.out)
    check_output_dir(out)
    recipe.check_same_run()
    check_curriculum_start(recipe)
    if recipe.base or (recipe.base_dir / "sigma_config.json").is_file():  # given, or this run's own from before
        check_base(recipe.base_dir)
    write_json(out / "recipe.json", recipe.to_json())
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    lap = [time.perf_counter()]

    def clock(stage: str) -> None:  # written after every stage, so an interrupted invocation keeps what it did
        now = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + now - lap[0]
        timings["total"] = sum(v for k, v in timings.items() if k != "total")
        write_json(timings_path, timings)
        lap[0] = now

    make_data(recipe)
    clock("data")
    report("data", f"{out / 'data'} ready")
    base = make_base(recipe, report)
    clock("autoencoder")
    report("base", f"{base} ready")
    from .trainer import Trainer

    if not (out / "train" / "latest").is_file() or trained_steps(out / "train") < recipe.steps:
        Trainer(recipe.train_config(), on_step).run()
    clock("finetune")
    skills, outputs = recipe.skills, recipe.stage_outputs
    ae = decoder_stage(recipe, report) if recipe.decoder_steps else None
    clock("decoder")
    made = export(out / "train", outputs["mot"], skills=skills, ae_path=ae)
    clock("export")
    if recipe.with_curriculum:
        tuned = curriculum_stage(recipe, report)
        clock("curriculum")
        made = average_models(made, tuned, recipe.curriculum_weight, outputs["average"])
        clock("average")
        report("average", f"{made} written ({recipe.curriculum_weight:g} of {tuned})")
    if recipe.with_balance:
        tuned = balance_stage(recipe, made, report)
        clock("balance")
        made = average_models(made, tuned, recipe.balance_weight, outputs["balance"])
        clock("balance average")
    report("model", f"{made} written")
    return made


def check_curriculum_start(recipe: ShapesRecipe) -> None:
    """Refuse, before any training, a run whose MoT would no longer be the one its curriculum finetuned: trained
    further (another --steps), or trained again (train/ gone); averaging either with that finetune would mix two
    models. (The recorded hash catches the rest when the curriculum stage starts: :func:`curriculum_stage`.)"""
    started = curriculum_origin(recipe)
    if started is None:
        return
    folder = Path(recipe.out) / "curriculum"
    if started["steps"] != recipe.steps:
        raise InputError(
            f"{folder} finetuned the MoT of --steps {started['steps']}: pass --steps {started['steps']} to resume "
            f"this run, or delete that folder to train the MoT to {recipe.steps} steps and finetune it again"
        )
    if not (Path(recipe.out) / "train" / "latest").is_file():
        raise InputError(
            f"{folder} finetuned the MoT trained in {Path(recipe.out) / 'train'}, which is gone: restore it, or "
            "delete the curriculum folder too to train a MoT and finetune it again"
        )


def curriculum_origin(recipe: ShapesRecipe) -> dict | None:
    """What ``curriculum/mot.json`` recorded of the MoT the curriculum started from (``steps``, ``sha256`` of its
    ``ema.safetensors``); None before the curriculum started, or when this run ships no curriculum (its weight 0).
    A curriculum folder without that record (one made by ``sigma sigmagen train`` by hand) or with an older
    recipe's (its steps alone) is refused: nothing says which MoT it finetuned."""
    folder = Path(recipe.out) / "curriculum"
    path = folder / "mot.json"
    redo = f"delete {folder} (or move it away) to finetune this run's MoT again (about 20 minutes on two cores)"
    if not recipe.with_curriculum:
        return None
    if not path.is_file():
        if folder.is_dir() and any(folder.iterdir()):
            raise InputError(f"{folder} has no mot.json, so nothing says which MoT it finetuned: {redo}")
        return None
    origin = read_record(path, redo)
    if isinstance(origin, dict) and "steps" in origin and "sha256" not in origin:
        raise InputError(f"{path} was written by an older recipe that recorded the MoT's steps alone, so nothing says "
                         f"whether this run's MoT is the one it finetuned: {redo}")  # fmt: skip
    try:
        return {"steps": int(origin["steps"]), "sha256": str(origin["sha256"])}
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"{path} is no record of a MoT ({exc!r}): {redo}") from None


def curriculum_stage(recipe: ShapesRecipe, report: Report) -> Path:
    """``curriculum/``: SIGMA-GEN's curriculum from ``mot/`` (:meth:`ShapesRecipe.curriculum_recipe`), resumable like
    every stage; returns its last stage's model."""
    from .sigmagen_recipe import run as run_curriculum

    sg = recipe.curriculum_recipe()
    weights = Path(sg.model) / "ema.safetensors"
    mot = {"steps": trained_steps(Path(recipe.out) / "train"), "sha256": file_sha256(weights)}
    started = curriculum_origin(recipe)
    if started is None:  # the MoT it starts from, recorded before its first step (check_curriculum_start)
        write_json(Path(sg.out) / "mot.json", mot)
    elif started != mot:  # the MoT was trained again (train/ deleted, or another run's curriculum copied in)
        raise InputError(
            f"{sg.out} finetuned another MoT than {sg.model} ({started['steps']} steps, sha256 "
            f"{started['sha256'][:12]}, against {mot['steps']}, {mot['sha256'][:12]}): delete {sg.out} to finetune "
            "this one, or restore the MoT it started from"
        )

    def on_step(k: int, s) -> None:  # "step N" first: the CLI prints every hundredth to a log file
        report("curriculum", f"step {s.step} of {sg.stages[k].name} ({k + 1}/{len(sg.stages)}), loss {s.loss:.4f}")

    return run_curriculum(sg, lambda stage, message: report("curriculum", f"{stage}: {message}"), on_step)
