"""SIGMA-GEN's three-stage curriculum as one resumable command, chaining three ``sigma finetune`` runs.

    sigma sigmagen train --out runs/sigmagen-shapes                 # the shapes world, from the shipped model
    sigma sigmagen train --data-dir my-rows/ --model sigma --out runs/sg   # your own rows, one folder per stage

Each stage trains from the previous stage's exported weights on its own rows:

1. ``boxes``: 2-3 subjects placed by 2-D boxes only, no channel drop (where each subject goes);
2. ``structure``: 2-4 subjects by 2-D box, 3-D box, mask or mask + depth (how precisely);
3. ``full``: 2-5 subjects, every precision, the paper's channel drop and full-scene depth share (everything).

The routing maps of the shapes world are drawn at 50 levels a subject (subjects 1..5 at 50..250), not the paper's
10: the toy autoencoder's 8-channel latents blur levels 10 apart (10 and 20 differ by 0.5 in a latent whose spread
is 1.1), and a model trained at step 10 could not tell its subjects' regions apart (docs/SIGMAGEN.md). Every
exported model stores its step (``ArchConfig.routing_step``), so requests for it draw their controls the same way.

In the shapes world a fourth step, ``decoder``, finetunes the autoencoder's decoder on the scenes' pictures with
its encoder frozen (``--decoder-steps``, 0 skips it). The first generation's autoencoder was trained on single
objects and reconstructed 2-5-object scenes poorly (the true pictures, encoded and decoded, scored 75 % of subjects
right at 2 subjects and 54 % at 3), which capped what any generator could score; today's, trained on every kind of
picture, lets 94-99 % through, so the step matters less. With the encoder and the latent scaling unchanged, the MoT
model's latents keep their meaning and only the drawing changes.

A stage whose ``model/`` exists is skipped, a stage with a checkpoint resumes, so rerunning the command after an
interruption continues where it stopped. The stage schedule is our reading of the paper's coarse-to-fine
curriculum (fewer subjects and coarser structure first); each stage's options are in ``recipe.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sigma_studio.model.config import ROUTING_STEP, SHEET_ROWS
from sigma_studio.model.data.sigmagen_options import PAPER_PRECISIONS
from sigma_studio.model.errors import InputError
from sigma_studio.model.files import check_output_dir, write_json
from sigma_studio.model.presets import SHAPES_ROUTING_STEP
from sigma_studio.model.shapes.outside import WORLD, DrawnBy

from .checkpoint import export, trained_steps
from .config import LoRAConfig, TrainConfig, WorldRecipe


@dataclass(frozen=True)
class Stage:
    name: str
    subjects: tuple[int, int]  # fewest and most subjects per scene (shapes world)
    precision: tuple[str, ...]
    channel_drop: float
    full_depth: float
    rows: int  # shapes-world training rows
    steps: int


STAGES: tuple[Stage, ...] = (
    Stage("boxes", (2, 3), ("box",), 0.0, 0.0, 3000, 1500),
    Stage("structure", (2, 4), ("box", "box3d", "mask", "mask_depth"), 0.05, 0.0, 4000, 1500),
    Stage("full", (2, 5), ("box", "box3d", "mask", "mask_depth"), 0.1, 0.1, 6000, 2000),
)
MANY = 10  # SIGMA-GEN's most subjects in one pass
# The SIGMA-GEN paper's curriculum (§4.1): at most 4 subjects for 30k steps, then at least 3 for 20k, then more
# than 4 for 20k, every structure input from the first stage (the converter's paper defaults: one input per example,
# one channel dropped with p = 0.1). Rows of your own (--data-dir: one folder) are filtered by subject count per
# stage; the shapes world draws at most 5 subjects, so its last stage is the 5-subject scenes.
PAPER_STAGES: tuple[Stage, ...] = (
    Stage("up-to-4", (1, 4), PAPER_PRECISIONS, 0.1, 0.0, 6000, 30_000),
    Stage("3-or-more", (3, MANY), PAPER_PRECISIONS, 0.1, 0.0, 6000, 20_000),
    Stage("more-than-4", (5, MANY), PAPER_PRECISIONS, 0.1, 0.0, 6000, 20_000),
)
WORLD_MAX_SUBJECTS = 5
# --recipe: "shapes" is our scaled curriculum for the shapes world (full finetune, AdamW); "paper" is the paper's
# stages with LoRA rank 128 and the Prodigy optimizer (the `recipes` extra). The paper gives no LoRA alpha: alpha =
# rank (scale 1). Prodigy's learning rate is its usual 1.0 (it estimates the step size itself).
RECIPES: dict[str, dict] = {
    "shapes": {},
    "paper": {"stages": PAPER_STAGES, "optimizer": "prodigy", "lr": 1.0, "min_lr": 0.0, "lora_rank": 128,
              "filter_rows": True},
}  # fmt: skip


@dataclass(frozen=True)
class SigmaGenRecipe(WorldRecipe):
    out: str = "runs/sigmagen-shapes"
    model: str = "shapes"  # the first stage's starting weights
    data_dir: str | None = None  # rows of your own: DATA_DIR/<stage name>/ (parquet); None: the shapes world
    stages: tuple[Stage, ...] = STAGES
    eval_rows: int = 25  # held-out shapes-world scenes per subject count (2, 3, 4, 5)
    lr: float = 5e-4  # finetuning a trained model: half the shapes model's rate, a shorter warm-up
    warmup: int = 100
    save_every: int = 250
    routing_step: int | None = None  # None: SHAPES_ROUTING_STEP for the shapes world, else the paper's 10
    decoder_steps: int = 2000  # the shapes world's decoder finetuning (0: none)
    decoder_lr: float = 3e-4
    recipe: str = "shapes"  # the name of RECIPES this was made from (the run folder records it)
    optimizer: str = "adamw"
    lora_rank: int | None = None  # LoRA adapters of this rank (alpha = rank) instead of a full finetune
    filter_rows: bool = False  # --data-dir is one folder of rows, filtered per stage by its subject range
    replay: float = 0.0  # shapes world: share of each stage's rows from SIGMA's five families (0: SIGMA-GEN alone)

    def __post_init__(self) -> None:
        if not 0.0 <= self.replay < 1.0:
            raise InputError(
                f"--replay is a share of each stage's rows, from 0 up to (not including) 1; got {self.replay}"
            )
        if self.replay and self.data_dir is not None:
            raise InputError(
                "--replay mixes in the shapes world's SIGMA rows: with --data-dir, put such rows in its folders"
            )

    @property
    def replay_rows(self) -> tuple[int, ...]:
        """SIGMA rows beside each stage's SIGMA-GEN rows, so that they make ``replay`` of the stage's rows."""
        return tuple(round(s.rows * self.replay / (1 - self.replay)) for s in self.stages)

    @classmethod
    def named(cls, recipe: str, **fields) -> SigmaGenRecipe:
        """The recipe ``recipe`` of :data:`RECIPES`, with ``fields`` (given options) winning over its values."""
        if recipe not in RECIPES:
            raise InputError(f"--recipe {recipe} is not one of {', '.join(RECIPES)}")
        return cls(**{**RECIPES[recipe], **fields, "recipe": recipe})

    @property
    def step(self) -> int:
        """The routing step the rows are drawn with and the exported models store."""
        if self.routing_step is not None:
            return self.routing_step
        return SHAPES_ROUTING_STEP if self.data_dir is None else ROUTING_STEP

    @property
    def world_sheet_rows(self) -> int:
        """Identity-sheet cells per column of the shapes world's rows: the starting model's own layout, so that its
        finetune draws the sheets it was trained to read (rows of your own carry theirs in their meta)."""
        from sigma_studio.model.hub import resolve
        from sigma_studio.model.weights.arch_config import read_arch_config

        source = resolve(self.model)
        return read_arch_config(source.config_dir, weights=source.weights).sheet_rows

    def train_config(self, k: int, start: Path) -> TrainConfig:
        stage, run = self.stages[k], Path(self.out) / self.stages[k].name
        lora = LoRAConfig(rank=self.lora_rank, alpha=float(self.lora_rank)) if self.lora_rank else None
        return self.schedule(
            out=str(run / "train"), dataset=str(self.stage_data(k)), model=str(start), init="weights",
            steps=stage.steps, group_mask=True, drop_text=0.05, drop_vae=0.05, drop_vit=0.0, seed=self.seed + k,
            resume=(run / "train" / "latest").is_file(), optimizer=self.optimizer, lora=lora,
            # the world's rows: one window, all permuted; rows of your own: the finetune's bounded window
            shuffle_rows=self.shuffle_rows if self.data_dir is None else TrainConfig.shuffle_rows,
        )  # fmt: skip

    def stage_data(self, k: int) -> Path:
        name = self.stages[k].name
        if self.data_dir and not self.filter_rows:
            return Path(self.data_dir) / name
        return Path(self.out) / name / "data"


Report = Callable[[str, str], None]
SHEET_TILE = 64  # identity-sheet cells of the shapes world: its pictures are 64 px, the model sees 64 px at most
SIGMAGEN_SKILLS = ("subjects",)  # what the curriculum teaches: identity sheets placed by box, mask or 3-D box


def run(recipe: SigmaGenRecipe, report: Report = lambda stage, msg: None, on_step=None) -> Path:
    """Run (or continue) every stage; returns the last stage's exported model directory. ``on_step(k, log)``
    follows the training steps of stage ``k``."""
    from sigma_studio.model.data.sigmagen import SigmaGenOptions

    from .trainer import Trainer

    out = Path(recipe.out)
    check_output_dir(out)
    if recipe.data_dir is None:  # the shapes world's scenes must fit the routing maps, before anything is written
        SigmaGenOptions(routing_step=recipe.step, max_subjects=max(_world(s).subjects[1] for s in recipe.stages))
    recipe.check_same_run()
    write_json(out / "recipe.json", recipe.to_json())
    timings_path = out / "timings.json"  # seconds per step; a resumed run keeps the earlier steps' figures
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    start = Path(recipe.model)
    skills = functools.cache(lambda: trained_skills(recipe.model))  # read once, when a stage is first exported
    world_rows = recipe.world_sheet_rows if recipe.data_dir is None else None  # the starting model read once
    if world_rows is not None:
        make_eval(out / "eval", recipe.eval_rows, recipe.seed, recipe.step, world_rows)
    for k, stage in enumerate(recipe.stages):
        run_dir = out / stage.name
        t0 = time.perf_counter()
        if (run_dir / "model" / "ema.safetensors").is_file():
            report(stage.name, f"done earlier: {run_dir / 'model'}")
            start = run_dir / "model"
            continue
        if recipe.data_dir is None:
            seed, sheet_rows = recipe.seed + 100 * (k + 1), world_rows
            make_stage_data(run_dir / "data" / "train.parquet", _world(stage), seed, recipe.step, sheet_rows)
            make_replay_data(run_dir / "data", recipe.replay_rows[k], seed)
        elif recipe.filter_rows:
            counts = filter_stage_rows(Path(recipe.data_dir), run_dir / "data", stage)
            report(stage.name, f"rows with {stage.subjects[0]} to {stage.subjects[1]} subjects: {counts['kept']} kept, "
                               f"{counts['other']} outside, {counts['unreadable']} unreadable")  # fmt: skip
            sheet_rows = _check_rows(recipe.stage_data(k), recipe.step)
        elif not recipe.stage_data(k).exists():
            raise InputError(f"--data-dir has no {stage.name}/ folder of rows for stage {k + 1}")
        else:
            sheet_rows = _check_rows(recipe.stage_data(k), recipe.step)
        report(stage.name, f"stage {k + 1}/{len(recipe.stages)}: {stage.steps} steps from {start}")
        if not (run_dir / "train" / "latest").is_file() or trained_steps(run_dir / "train") < stage.steps:
            Trainer(recipe.train_config(k, start), (lambda s, k=k: on_step(k, s)) if on_step else None).run()
        start = export(run_dir / "train", run_dir / "model", routing_step=recipe.step, sheet_rows=sheet_rows,
                       skills=skills())  # fmt: skip
        timings[stage.name] = time.perf_counter() - t0
        report(stage.name, f"{start} written")
    if recipe.data_dir is None and recipe.decoder_steps > 0:
        done, t0 = (out / "decoder" / "model" / "ae.safetensors").is_file(), time.perf_counter()
        start = decoder_stage(recipe, start, report)
        if not done:
            timings["decoder"] = time.perf_counter() - t0
    write_json(timings_path, timings)
    return start


def trained_skills(start: str | Path) -> tuple[str, ...] | None:
    """What a stage's model was trained to read: its starting model's skills and SIGMA-GEN's subjects (a finetune of
    the shipped shapes model keeps its attribute tokens and box layouts); None, never warned about, when the
    starting model's are not known. Read after the stage trained, so the model is already resolved (or downloaded)."""
    from sigma_studio.model.config import SKILLS
    from sigma_studio.model.hub import resolve
    from sigma_studio.model.weights.arch_config import source_arch

    source = resolve(str(start))
    known = source_arch(source, source.weights).skills
    return None if known is None else tuple(s for s in SKILLS if s in known or s in SIGMAGEN_SKILLS)


def decoder_stage(recipe: SigmaGenRecipe, model_dir: Path, report: Report) -> Path:
    """``decoder/model``: ``model_dir`` with its autoencoder's decoder finetuned on the last stage's pictures (with
    ``--replay``, SIGMA's pictures among them on purpose: the decoder keeps drawing what the model still draws)."""
    import torch
    from safetensors.torch import load_file

    from sigma_studio.model.request.tokens import Tokenizer
    from sigma_studio.model.weights.arch_config import read_arch_config
    from sigma_studio.model.weights.loader import load_autoencoder, write_model_dir

    from .autoencoder import AEConfig, finetune_decoder, load_images

    run_dir = Path(recipe.out) / "decoder"
    if (run_dir / "model" / "ae.safetensors").is_file():
        report("decoder", f"done earlier: {run_dir / 'model'}")
        return run_dir / "model"
    arch = read_arch_config(model_dir)
    vae = finetune_decoder(
        load_autoencoder(model_dir / "ae.safetensors", arch), str(recipe.stage_data(len(recipe.stages) - 1)),
        run_dir / "train", load_images(str(Path(recipe.out) / "eval"), 400, targets_only=True),
        run_dir / "metrics.json", steps=recipe.decoder_steps, lr=recipe.decoder_lr, seed=recipe.seed,
        max_images=AEConfig.max_images, report=lambda message: report("decoder", message),
    )  # fmt: skip
    ema = load_file(str(model_dir / "ema.safetensors"))
    ae = {k: v.to(torch.float16) for k, v in vae.state_dict().items()}
    return write_model_dir(run_dir / "model", arch, Tokenizer.from_dir(model_dir),
                           {"ema.safetensors": ema, "ae.safetensors": ae})  # fmt: skip


def _world(stage: Stage) -> Stage:
    """The stage as the shapes world can draw it (at most WORLD_MAX_SUBJECTS subjects)."""
    low, high = stage.subjects
    return dataclasses.replace(stage, subjects=(min(low, WORLD_MAX_SUBJECTS), min(high, WORLD_MAX_SUBJECTS)))


def filter_stage_rows(source: Path, folder: Path, stage: Stage) -> dict[str, int]:
    """The rows of ``source`` (its parquet files) whose subject count lies in the stage's range, written to
    ``folder/train.parquet`` (unless written earlier); a row whose meta cannot be read is skipped and counted."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sigma_studio.model.files import atomic_write

    files = sorted(source.glob("*.parquet"))
    if not files:
        raise InputError(f"--data-dir {source} holds no .parquet rows (make them with `sigma sigmagen make`)")
    counts = {"kept": 0, "other": 0, "unreadable": 0}
    tables = []
    for path in files:
        table = pq.read_table(path)
        keep = [_subject_count(m, counts) in range(stage.subjects[0], stage.subjects[1] + 1)
                for m in table.column("meta").to_pylist()]  # fmt: skip
        counts["kept"] += sum(keep)
        tables.append(table.filter(pa.array(keep)))
    counts["other"] = sum(t.num_rows for t in map(pq.read_metadata, files)) - counts["kept"] - counts["unreadable"]
    if counts["kept"] == 0:
        raise InputError(f"--data-dir {source} has no row with {stage.subjects[0]} to {stage.subjects[1]} subjects "
                         f"for stage {stage.name}")  # fmt: skip
    if not (folder / "train.parquet").is_file():
        atomic_write(folder / "train.parquet", lambda f: pq.write_table(pa.concat_tables(tables), f))
    return counts


def _subject_count(meta: str | None, counts: dict[str, int]) -> int:
    try:
        return len(json.loads(meta)["subjects"])
    except (TypeError, ValueError, KeyError):
        counts["unreadable"] += 1
        return -1


def make_stage_data(path: Path, stage: Stage, seed: int, routing_step: int, sheet_rows: int = SHEET_ROWS) -> None:
    """The stage's shapes-world rows as the parquet file ``path``, unless written earlier."""
    from sigma_studio.model.data.dataset import write_parquet
    from sigma_studio.model.data.sigmagen import SigmaGenOptions, rows
    from sigma_studio.model.shapes.scenes import shapes_scenes

    if path.is_file():
        return
    opts = SigmaGenOptions(precision=stage.precision, channel_drop=stage.channel_drop, full_depth=stage.full_depth,
                           tile=SHEET_TILE, seed=seed, routing_step=routing_step, sheet_rows=sheet_rows,
                           max_subjects=stage.subjects[1])  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(path, rows(shapes_scenes(stage.rows, seed, stage.subjects), opts, {}))


def make_replay_data(folder: Path, rows: int, seed: int) -> None:
    """``rows`` rows of SIGMA's five families of the shapes world, split by their mix, beside a stage's SIGMA-GEN rows
    (``folder/sigma-<family>.parquet``, unless written earlier; none when ``rows`` is 0). A finetune of the MoT
    (the shapes model shipped until 2026-12-05) on SIGMA-GEN rows alone forgets them: compose 82 % -> 14 %,
    text 98 % -> 7 % (docs/SIGMAGEN.md)."""
    from sigma_studio.model.data.dataset import write_parquet
    from sigma_studio.model.shapes.tasks import FAMILIES, MIX, examples

    if not rows:
        return
    for family in FAMILIES:
        path = folder / f"sigma-{family}.parquet"
        if not path.is_file():
            write_parquet(path, examples(family, "train", max(2, round(rows * MIX[family])), seed))


def make_eval(
    folder: Path, per_count: int, seed: int, routing_step: int, sheet_rows: int = SHEET_ROWS, drawn_by: DrawnBy = WORLD
) -> None:
    """Held-out scenes (seeds no stage trains on): ``N.parquet`` for N = 2..5 subjects, every precision;
    ``drawn_by="opencv"``: the same scenes drawn by the outside check's renderer."""
    from sigma_studio.model.data.dataset import write_parquet
    from sigma_studio.model.data.sigmagen import PRECISIONS, SigmaGenOptions, rows
    from sigma_studio.model.shapes.scenes import shapes_scenes

    folder.mkdir(parents=True, exist_ok=True)
    for n in range(2, 6):
        if not (folder / f"{n}.parquet").is_file():
            # every structure input, drawn per subject, placed exactly (no dilation or jitter): the rows the
            # curriculum's earlier figures were scored on, whatever the converter's training defaults become
            opts = SigmaGenOptions(channel_drop=0.0, tile=SHEET_TILE, seed=seed + 9000 + n, routing_step=routing_step,
                                   sheet_rows=sheet_rows,
                                   max_subjects=n, precision=PRECISIONS, precision_draw="subject", mask_dilation=0.0,
                                   box_dilation=0.0, box_aspect_jitter=0.0)  # fmt: skip
            scenes = shapes_scenes(per_count, seed + 9000 + n, (n, n), drawn_by)
            write_parquet(folder / f"{n}.parquet", rows(scenes, opts, {}))


def _check_rows(folder: Path, step: int) -> int:
    """Rows drawn at another routing step than the model will store would teach it controls it never gets;
    returns the identity-sheet cells per column the rows were laid out with (the model stores the same)."""
    import pyarrow.parquet as pq

    from sigma_studio.model.request.multisubject import MAX_SUBJECTS
    from sigma_studio.model.shapes.sigmagen_eval import routing_step_of

    for path in sorted(folder.glob("*.parquet"))[:1]:
        if "meta" not in pq.read_schema(path).names:
            break
        meta = pq.read_table(path, columns=["meta"]).slice(0, 1).column("meta").to_pylist()
        meta = json.loads(meta[0]) if meta and meta[0] else None
        found = routing_step_of(meta) if meta is not None else None
        if found is not None and found != step:
            raise InputError(f"{path} was made with --routing-step {found}; train with --routing-step {found}")
        rows = meta.get("sheet_rows", SHEET_ROWS) if isinstance(meta, dict) else SHEET_ROWS
        return (
            rows if isinstance(rows, int) and not isinstance(rows, bool) and 1 <= rows <= MAX_SUBJECTS else SHEET_ROWS
        )
    return SHEET_ROWS
