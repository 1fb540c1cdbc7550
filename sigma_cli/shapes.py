"""``sigma shapes``: the shapes world (make its data, train the shipped model from nothing, evaluate by pixels).

sigma shapes make --out runs/shapes/data --rows 20000
sigma shapes train --out runs/shapes                   # the whole recipe; rerun to resume
sigma shapes eval --model shapes                        # per-family table on the held-out rows
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sigma_studio.finetune.shapes_recipe import ShapesRecipe
from sigma_studio.model.config import GenerationConfig
from sigma_studio.model.errors import InputError
from sigma_studio.model.shapes.outside import DRAWN_BY, WORLD, DrawnBy
from sigma_studio.model.shapes.tasks import EVAL_PAIRS, EvalPairs

from . import render
from .finetune import ScopeOpt
from .groups import grouped
from .options import DebugOpt, ThinkOpt, flag

app = typer.Typer(no_args_is_help=True, help="The shapes world: data, the one-command training recipe, evaluation.")


def check_outputs(json_out: Path | None, save: Path | None = None) -> None:
    """Refuse a ``--json`` file or ``--save`` folder that cannot be written, before any model loads (one line)."""
    from sigma_studio.model.files import check_output_dir, check_output_file

    if save is not None:
        check_output_dir(save, "--save")
    if json_out is not None:  # a summary is rewritten on each run: an existing file is replaced
        check_output_file(json_out, overwrite=True, option="--json", example="eval.json")


R = ShapesRecipe()  # every default below is the recipe's
DrawnByOpt = Annotated[
    DrawnBy,
    typer.Option(
        help="who draws the generated rows: the world's own renderer, or OpenCV from the written rules alone (the "
        "outside check; docs/SHAPES.md)"
    ),
]
DRAWN_PER_FAMILY = 100  # `sigma shapes eval` without --data: held-out rows a family (one row is one point)


@dataclass(frozen=True)
class WorldEvalOptions:
    """What both world evaluations take (``sigma shapes eval``, ``sigma sigmagen eval``), and how they end."""

    steps: Annotated[int | None, typer.Option(help="denoising steps \\[default: the generation default]")] = None
    save: Annotated[Path | None, typer.Option(help="also save every picture under this folder")] = None
    json_out: Annotated[Path | None, typer.Option("--json", help="write the summary and rows as JSON here")] = None
    seed: Annotated[int, typer.Option(help="seed of row k is SEED + k")] = 0
    reconstruct: Annotated[
        bool,
        typer.Option(
            metavar="",
            help="score the true pictures after the model's autoencoder instead (its ceiling on the figures)",
        ),
    ] = False
    think: ThinkOpt = None

    def config(self) -> GenerationConfig:
        """The sampler settings, once the output places are known to be writable (before any model loads)."""
        check_outputs(self.json_out, self.save)
        steps = {} if self.steps is None else {"steps": self.steps}
        return GenerationConfig(**steps, think=self.think)

    def show(self, table, model: str, summary: dict, records: list, debug: bool, **about) -> None:
        """Print the table; with --json, write the summary and every row (and ``about``, what the rows are)."""
        from sigma_studio.model.files import write_json

        render.stdout.print(table)
        if self.json_out is not None:
            with render.errors(debug):
                write_json(self.json_out, {"model": model, **about, "summary": summary, "rows": records})


CurriculumWeightOpt = Annotated[
    float, typer.Option(help="share of SIGMA-GEN's curriculum finetune in the final weights (0: none)")
]
CurriculumReplayOpt = Annotated[float, typer.Option(help="share of the five families' rows in that curriculum")]
BalanceStepsOpt = Annotated[
    int, typer.Option(help="steps of the background stage: a finetune on fresh rows, background's weighed up (0: none)")
]
BalanceWeightOpt = Annotated[float, typer.Option(help="share of the background stage's finetune in the final weights")]
BalanceBoxedOpt = Annotated[
    int, typer.Option(help="rows of the training-only boxed family beside the background stage's (0: none)")
]
BoxedOpt = Annotated[int, typer.Option(help="rows of the training-only boxed family in the MoT's data (0: none)")]
FairOpt = Annotated[
    bool,
    typer.Option(
        metavar="",
        help="select's and find's training scenes: no object but the named one in a colour held out with its shape",
    ),
]
OffcentreOpt = Annotated[
    float,
    typer.Option(
        help="share of compose's and layout's training rows whose reference shows its object anywhere, not in the "
        "middle (the target stays where its family puts it)"
    ),
]
LabelOpt = Annotated[
    float, typer.Option(help="weight of the MoT's heads reading every token label from its first step (0: off)")
]
BalanceLabelOpt = Annotated[
    float,
    typer.Option(help="weight of the background stage's heads reading what its tokens show (0: off)"),
]
BalanceLabelsOpt = Annotated[
    str,
    typer.Option(help="what those heads read: drawn (the tokens being drawn) or reference (each reference token's "
                 "shape, and whether it is the object the words name)"),
]  # fmt: skip
BalanceShiftOpt = Annotated[
    float,
    typer.Option(help="select's and layout's rows' own timestep shift in the background stage (0: the run's)"),
]


def clear_world(out: Path, overwrite: bool) -> None:
    """Remove the world in ``out`` before another is drawn there (a finished one only with ``overwrite``)."""
    from sigma_studio.model.shapes.auxiliary import AUXILIARY
    from sigma_studio.model.shapes.tasks import FAMILIES

    if (out / "world.json").is_file() and not overwrite:
        raise InputError(f"--out {out} already holds a world (world.json): pass --overwrite to replace it, or "
                         "choose another folder")  # fmt: skip
    for family in (*FAMILIES, *AUXILIARY):  # the world's files only: nothing else a folder may hold
        for split in ("train", "eval"):
            (out / split / f"{family}.parquet").unlink(missing_ok=True)
    (out / "world.json").unlink(missing_ok=True)


@app.command()
def make(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for train/ and eval/ parquet files")],
    rows: Annotated[int, typer.Option(min=10, help="training rows, split over the families")] = R.rows,
    eval_rows: Annotated[int, typer.Option(min=2, help="held-out rows per family")] = R.eval_rows,
    seed: Annotated[int, typer.Option(help="world seed (rows are a pure function of it)")] = R.seed,
    attribute_tokens: Annotated[
        bool, typer.Option(metavar="", help="write attribute tokens (off: a neutral word)")
    ] = R.attribute_tokens,
    eval_pairs: Annotated[
        EvalPairs,
        typer.Option(help="eval/'s targets: the held-out pairs, or training pairs in fresh rows (a diagnostic)"),
    ] = EVAL_PAIRS[0],
    describe_rows: Annotated[
        int,
        typer.Option(min=0, help="rows of the training-only describe family (a recognition signal with --text-loss)"),
    ] = 0,
    find_rows: Annotated[
        int, typer.Option(min=0, help="rows of the training-only find family (select's object kept where it stands)")
    ] = 0,
    boxed_rows: Annotated[
        int, typer.Option(min=0, help="training-only boxed rows: a named shape filling a layout box")
    ] = R.boxed_rows,
    plans: Annotated[
        str,
        typer.Option(
            help="families whose training rows end with a plan, comma-separated (find too; select:place, "
            "select:scene or select:scene+colour: select's plan names its object's place, every object, or every "
            "object and then its colour), or all five (--think)"
        ),
    ] = "",
    shades: Annotated[
        float,
        typer.Option(help="share of compose, select, layout and background training rows drawn in random shades"),
    ] = 0.0,
    fair_distractors: FairOpt = R.fair_distractors,
    offcentre: OffcentreOpt = R.offcentre,
    overwrite: Annotated[bool, flag("--overwrite", "replace the world already in --out")] = False,
    debug: DebugOpt = False,
) -> None:
    """Write the shapes world as SIGMA-format parquet (deterministic for a seed).

    A finished world in --out (its world.json) is replaced only with --overwrite; its parquet files (one a family)
    go first, so no family of another world is left beside the new one's (nor of a world cut short)."""
    from sigma_studio.model.files import check_output_dir
    from sigma_studio.model.shapes.tasks import FAMILIES, check_world_options, make_world

    with render.errors(debug):
        planned = FAMILIES if plans.strip() == "all" else tuple(f.strip() for f in plans.split(",") if f.strip())
        auxiliary = {"describe": describe_rows, "find": find_rows, "boxed": boxed_rows}
        check_output_dir(out)  # a file in the way, or a read-only place: one line, before any row is drawn
        check_world_options(eval_pairs, planned, shades, auxiliary, offcentre)  # before the old world goes
        clear_world(out, overwrite)
        counts = make_world(
            out, rows, eval_rows, seed, attribute_tokens=attribute_tokens, eval_pairs=eval_pairs, auxiliary=auxiliary,
            plans=planned, shades=shades, fair_distractors=fair_distractors, offcentre=offcentre,
        )  # fmt: skip
    render.stdout.print(f"[green]✓[/] {sum(counts.values())} rows → {escape(str(out))}  ({json.dumps(counts)})")
    skipped = json.loads((out / "world.json").read_text()).get("seen_skipped")
    if skipped:  # the diagnostic's rows are fresh: say how many draws were training rows
        render.stdout.print(f"left out of eval/ as identical to a training row: {json.dumps(skipped)}")


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="run folder (rerun to resume)")] = Path(R.out),
    steps: Annotated[int, typer.Option(help="optimizer steps of the MoT model")] = R.steps,
    decoder_steps: Annotated[
        int, typer.Option(help="steps of the decoder finetune on coloured canvases and targets (0: none)")
    ] = R.decoder_steps,
    ae_steps: Annotated[int, typer.Option(help="autoencoder steps")] = R.ae_steps,
    rows: Annotated[int, typer.Option(help="training rows of the five families")] = R.rows,
    sigmagen_rows: Annotated[int, typer.Option(help="SIGMA-GEN training rows (0: none)")] = R.sigmagen_rows,
    group_mask: Annotated[
        bool, typer.Option("--group-mask/--no-group-mask", metavar="", help="SIGMA group-scoped mask")
    ] = R.group_mask,
    group_mask_scope: ScopeOpt = R.group_mask_scope,
    attribute_tokens: Annotated[
        bool, typer.Option(metavar="", help="attribute tokens in the data (off: ablation)")
    ] = R.attribute_tokens,
    seed: Annotated[int, typer.Option(help="seed of the data, the initialisation and every draw")] = R.seed,
    base: Annotated[
        Path | None, typer.Option(help="reuse the base/ (autoencoder, tokenizer) of an earlier run")
    ] = None,
    boxed_rows: BoxedOpt = R.boxed_rows,
    fair_distractors: FairOpt = R.fair_distractors,
    offcentre: OffcentreOpt = R.offcentre,
    label_weight: LabelOpt = R.label_weight,
    curriculum_weight: CurriculumWeightOpt = R.curriculum_weight,
    curriculum_replay: CurriculumReplayOpt = R.curriculum_replay,
    balance_steps: BalanceStepsOpt = R.balance_steps,
    balance_weight: BalanceWeightOpt = R.balance_weight,
    balance_boxed_rows: BalanceBoxedOpt = R.balance_boxed_rows,
    balance_label_weight: BalanceLabelOpt = R.balance_label_weight,
    balance_labels: BalanceLabelsOpt = R.balance_labels,
    balance_family_shift: BalanceShiftOpt = R.balance_family_shift,
    debug: DebugOpt = False,
) -> None:
    """Train the shapes model from nothing on this machine: data, autoencoder, `sigma finetune`, decoder, export,
    SIGMA-GEN's curriculum and its average with the MoT, the background stage and its average with that."""
    render.setup_logging(debug)
    with render.errors(debug):  # every option checked (and nothing written) before the progress bar
        recipe = ShapesRecipe(out=str(out), steps=steps, decoder_steps=decoder_steps, ae_steps=ae_steps, rows=rows,
                              sigmagen_rows=sigmagen_rows,
                              group_mask=group_mask, group_mask_scope=group_mask_scope,
                              attribute_tokens=attribute_tokens, seed=seed, base=str(base) if base else None,
                              boxed_rows=boxed_rows, fair_distractors=fair_distractors, offcentre=offcentre,
                              label_weight=label_weight,
                              curriculum_weight=curriculum_weight, curriculum_replay=curriculum_replay,
                              balance_steps=balance_steps, balance_weight=balance_weight,
                              balance_boxed_rows=balance_boxed_rows,
                              balance_label_weight=balance_label_weight, balance_labels=balance_labels,
                              balance_family_shift=balance_family_shift)  # fmt: skip
    with render.errors(debug):
        exported = run_with_progress(recipe)
    timings = json.loads((out / "timings.json").read_text())
    render.stdout.print(
        f"[green]✓[/] {exported}  (load it with --model {exported}); "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
    )


def run_with_progress(recipe: ShapesRecipe) -> Path:
    """The recipe under a progress bar (the MoT's steps); in a log file, a plain line now and then instead."""
    from sigma_studio.finetune.shapes_recipe import run

    with render.progress(transient=False) as bar:
        task = bar.add_task("shapes", total=recipe.steps)
        plain = not render.console.is_terminal

        def report(stage: str, message: str) -> None:
            bar.update(task, description=f"{stage}: {message}")
            every_step = message.startswith("step ")  # a stage's training step: every hundredth printed
            if plain and not (every_step and not message.split()[1].endswith("00")):
                render.console.print(f"{stage}: {message}")

        def on_step(s) -> None:
            line = f"train: step {s.step} loss {s.loss:.4f} · lr {s.lr:.1e} · {s.tokens_per_s:,.0f} tok/s"
            bar.update(task, completed=s.step, description=line)
            if plain and s.step % 25 == 0:
                render.console.print(line)

        return run(recipe, report, on_step)


@app.command(name="eval")
@grouped
def eval_cmd(
    *,
    model: Annotated[str, typer.Option("--model", "-m", help="shapes, or a model directory")] = "shapes",
    data: Annotated[Path | None, typer.Option(help="folder of held-out parquet rows \\[default: generated]")] = None,
    per_family: Annotated[
        int | None,
        typer.Option(
            min=1, help=f"rows per family \\[default: all of --data's; {DRAWN_PER_FAMILY} generated without it]"
        ),
    ] = None,
    family: Annotated[list[str] | None, typer.Option(help="only these families (repeatable)")] = None,
    drawn_by: DrawnByOpt = WORLD,
    run: WorldEvalOptions,
    debug: DebugOpt = False,
) -> None:
    """Generate the held-out rows and score them by pixels: accuracy and token-swap consistency per family."""
    import tempfile

    from sigma_studio.model import load_pipeline
    from sigma_studio.model.shapes.evaluate import eval_files, eval_pairs, evaluate_pipeline
    from sigma_studio.model.shapes.outside import make_outside
    from sigma_studio.model.shapes.tasks import FAMILIES, make_world

    render.setup_logging(debug)
    unknown = sorted(set(family or ()) - set(FAMILIES))
    if unknown:
        raise typer.BadParameter(f"{', '.join(unknown)}: the families are {', '.join(FAMILIES)}", param_hint="--family")
    if data is not None and drawn_by != WORLD:
        raise typer.BadParameter("--drawn-by draws the rows itself: leave out --data", param_hint="--drawn-by")
    drawn = {"drawn_by": drawn_by} if data is None else {}  # --data's rows: whoever drew them
    with render.errors(debug):
        config = run.config()
        if data is not None:
            eval_files(data)  # a bad --data is one line, before the model loads
        pipe = load_pipeline(model, mode="cpu")
        with tempfile.TemporaryDirectory() as tmp:
            if data is None:
                n = (per_family + per_family % 2) if per_family else DRAWN_PER_FAMILY
                if drawn_by == DRAWN_BY:
                    make_outside(tmp, n)  # a fixed list of rows, as the world's
                else:
                    make_world(tmp, rows=10, eval_rows=n)
                data = Path(tmp) / "eval"
            with render.progress() as bar:
                task = bar.add_task("rows", total=None)
                summary, records = evaluate_pipeline(pipe, str(data), per_family=per_family,
                                                     families=tuple(family or ()), config=config, seed=run.seed,
                                                     save_dir=run.save, on_row=lambda r: bar.advance(task),
                                                     reconstruct=run.reconstruct)  # fmt: skip
            pairs = eval_pairs(data)
    what = "pairs seen in training" if pairs == "seen" else "held-out pairs"
    what = f"{what}, drawn by OpenCV" if drawn_by == DRAWN_BY else what
    what = f"targets through the autoencoder, {what}" if run.reconstruct else what
    table = _family_table(f"shapes world, {what} ({escape(model)})", summary, records)
    run.show(table, model, summary, records, debug, eval_pairs=pairs, **drawn)


def _family_table(title: str, summary: dict, records: list[dict]):
    """`sigma shapes eval`'s table: a row a family."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("family", "n", "ok", "shape", "colour", "placed", "one", "fits", "swap", "s/img"):
        table.add_column(col, justify="left" if col == "family" else "right", no_wrap=True)
    for fam, s in summary.items():
        secs = [r["seconds"] for r in records if r["family"] == fam]
        swap = f"{s['swap_consistency']:.0%}/{s['swap_pairs']}" if "swap_consistency" in s else "—"
        table.add_row(fam, str(s["n"]), f"{s['accuracy']:.0%}", f"{s['shape']:.0%}", f"{s['colour']:.0%}",
                      f"{s['placed']:.0%}", f"{s['single']:.0%}", f"{s['fits']:.0%}", swap,
                      f"{sum(secs) / len(secs):.2f}")  # fmt: skip
    table.caption = (
        "ok: shape, colour, place, background and one object all right · placed: the object over the target's "
        "template at IoU >= 0.5 · one: a single object · fits: box IoU >= 0.5 · swap: compose pairs (tokens "
        "swapped) with both rows ok, of all pairs"
    )
    return table
