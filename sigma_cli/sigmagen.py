"""``sigma sigmagen make``: SIGMA-GEN training rows from annotated pictures (COCO-style) or shapes-world scenes."""

from __future__ import annotations

import dataclasses
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sigma_studio.finetune.sigmagen_recipe import SigmaGenRecipe
from sigma_studio.model.config import ROUTING_STEP
from sigma_studio.model.data.sigmagen import CHANNELS, PRECISIONS, SigmaGenOptions
from sigma_studio.model.presets import SHAPES_ROUTING_STEP
from sigma_studio.model.shapes.outside import DRAWN_BY, WORLD

from . import render
from .groups import grouped
from .options import DebugOpt, OverwriteOpt
from .shapes import DrawnByOpt, WorldEvalOptions

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", help="SIGMA-GEN: training data from annotations.")
D = SigmaGenOptions()
R = SigmaGenRecipe()
ReplayOpt = Annotated[
    float,
    typer.Option(
        help="shapes world: share of each stage's rows drawn from SIGMA's five families, so that a finetune of the "
        "shipped model keeps them (0: SIGMA-GEN rows alone)"
    ),
]

DRAWN_PER_COUNT = 100  # `sigma sigmagen eval` without --data: held-out scenes a subject count


def _csv(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


@dataclass(frozen=True)
class ConvertOptions:
    """`sigma sigmagen make`'s training-time choices: one flag per field of SigmaGenOptions, with its defaults."""

    max_subjects: Annotated[int, typer.Option(help="largest instances kept per picture")] = D.max_subjects
    min_area: Annotated[float, typer.Option(help="smallest instance, as a fraction of the picture")] = D.min_area
    precision: Annotated[str, typer.Option(help="structure inputs drawn among (" + ",".join(PRECISIONS) + ")")] = (
        ",".join(D.precision)
    )
    precision_draw: Annotated[
        str, typer.Option(help="one structure input per row (example, the paper) or per subject (subject)")
    ] = D.precision_draw
    channel_drop: Annotated[
        float, typer.Option(help="chance per row that exactly one spatial-control channel is zeroed")
    ] = D.channel_drop
    drop_channels: Annotated[str, typer.Option(help="channels a drop draws among (" + ",".join(CHANNELS) + ")")] = (
        ",".join(D.drop_channels)
    )
    mask_dilation: Annotated[
        float, typer.Option(help="masks grow by up to this fraction of their box's shorter side")
    ] = D.mask_dilation
    box_dilation: Annotated[
        float, typer.Option(help="each side of a 2-D box moves out by up to this fraction of its size")
    ] = D.box_dilation
    box_aspect_jitter: Annotated[float, typer.Option(help="a 2-D box's aspect ratio is scaled by 1 ± up to this")] = (
        D.box_aspect_jitter
    )
    identities: Annotated[
        Path | None, typer.Option(help="prepared (reposed) identities: DIR/<scene id>/<instance key>.png")
    ] = None
    crop_jitter: Annotated[float, typer.Option(help="identity crops move/grow by up to this")] = D.crop_jitter
    flip: Annotated[float, typer.Option(help="chance to mirror an identity crop")] = D.flip
    compose_share: Annotated[
        float, typer.Option(help="share of full-caption prompts; the rest get the background-only prompt")
    ] = D.compose_share
    background_prompt: Annotated[
        str, typer.Option(help="background-only prompt of a picture without a background caption")
    ] = D.background_prompt
    full_depth: Annotated[
        float, typer.Option(help="share of rows whose structure is the whole scene's depth (needs depth maps)")
    ] = D.full_depth
    tile: Annotated[int, typer.Option(help="identity-sheet cell size in pixels")] = D.tile
    seed: Annotated[int, typer.Option(help="seed of every random choice")] = D.seed
    routing_step: Annotated[
        int,
        typer.Option(help="routing-map levels per subject (the paper's 10; the model trained on the rows keeps it)"),
    ] = D.routing_step
    sheet_rows: Annotated[
        int,
        typer.Option(help="identity-sheet cells per column (the paper's 5; the model trained on the rows keeps it)"),
    ] = D.sheet_rows

    def options(self) -> SigmaGenOptions:
        fields = dataclasses.asdict(self)
        fields |= {"precision": _csv(self.precision), "drop_channels": _csv(self.drop_channels),
                   "identities": None if self.identities is None else str(self.identities)}  # fmt: skip
        return SigmaGenOptions(**fields)


@app.command()
@grouped
def make(
    *,
    out: Annotated[Path, typer.Option("--out", "-o", help="the parquet file to write")],
    coco: Annotated[Path | None, typer.Option(help="COCO-style instance annotations (JSON)")] = None,
    images: Annotated[Path | None, typer.Option(help="with --coco: the folder of the pictures")] = None,
    depth: Annotated[
        Path | None, typer.Option(help="with --coco: depth maps DEPTH/<stem>.png (brighter = nearer)")
    ] = None,
    shapes: Annotated[int | None, typer.Option(help="instead: this many shapes-world scenes of 2-5 things")] = None,
    convert: ConvertOptions,
    overwrite: OverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Write SIGMA-format rows \\[identity sheet, spatial control, target] that `sigma finetune` trains on.

    [b]Examples[/]

      sigma sigmagen make --coco instances.json --images pictures/ --out data/sigmagen/train.parquet

      sigma sigmagen make --shapes 2000 --out data/sigmagen-shapes/train.parquet
    """
    from sigma_studio.model.data.sigmagen import identity_warning, summary_lines
    from sigma_studio.model.errors import InputError
    from sigma_studio.model.files import check_output_file

    render.setup_logging(debug)
    with render.errors(debug):
        options = convert.options()
        if (coco is None) == (shapes is None):
            raise InputError("give either --coco FILE --images DIR, or --shapes N")
        if coco is not None and (images is None or not images.is_dir()):
            raise InputError(f"--coco needs --images DIR, the folder its file names are relative to (got {images})")
        if shapes is not None and shapes < 1:
            raise InputError(f"--shapes must be at least 1 scene (got {shapes})")
        path = check_output_file(out, overwrite)
        count, stats, annotations = _write_rows(path, options, coco, images, depth, shapes)
    skipped = stats.get("skipped", 0)
    render.stdout.print(f"[green]✓[/] {count} rows → {escape(str(path))}  [dim]({skipped} scenes skipped)[/]")
    for line in summary_lines(stats, options):
        render.stdout.print(f"  {escape(line)}")
    if annotations:
        render.warn(_skipped_line(annotations))
    if identity_warning(stats):
        render.warn(identity_warning(stats))
    render.stdout.print(f"[dim]options: {escape(str(dataclasses.asdict(options)))}[/]")


def _write_rows(path: Path, options: SigmaGenOptions, coco, images, depth, shapes) -> tuple[int, dict, Counter]:
    """Convert the scenes (COCO, or ``shapes`` shapes-world scenes) into ``path``; returns (rows written, the
    conversion's counts, skipped annotations by reason). Writing nothing usable is an InputError and leaves no
    file."""
    from sigma_studio.model.data.dataset import write_parquet
    from sigma_studio.model.data.sigmagen import coco_scenes, rows
    from sigma_studio.model.errors import InputError
    from sigma_studio.model.shapes.scenes import shapes_scenes

    annotations: Counter = Counter()  # skipped annotations, by reason
    scenes = coco_scenes(coco, images, depth, annotations) if coco is not None else shapes_scenes(shapes, options.seed)
    stats: dict = {}
    count = write_parquet(path, rows(scenes, options, stats))
    if not count:
        path.unlink(missing_ok=True)
        why = ", ".join(f"{n} × {reason}" for reason, n in stats.get("skipped_by", Counter()).most_common(3))
        raise InputError(f"no usable scene: every picture was unreadable or had no instance large enough"
                         f"{f' ({why})' if why else ''}{_skipped_line(annotations, '; ')}")  # fmt: skip
    return count, stats, annotations


def _skipped_line(reasons: Counter, lead: str = "") -> str:
    """ "skipped N annotations: 2 × reason, 1 × other" ("" when nothing was skipped)."""
    if not reasons:
        return ""
    detail = ", ".join(f"{n} × {why}" for why, n in reasons.most_common())
    return f"{lead}skipped {sum(reasons.values())} annotations: {detail}"


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="run folder (rerun the command to resume)")] = Path(R.out),
    model: Annotated[str, typer.Option(help="the first stage's starting weights (any --model)")] = R.model,
    recipe: Annotated[
        str,
        typer.Option(
            help="shapes: our scaled curriculum for the shapes world (boxes → structure → full, full finetune, "
            "AdamW) | paper: SIGMA-GEN §4.1 (≤4 subjects 30k steps, ≥3 20k, >4 20k; LoRA rank 128, Prodigy: "
            "pip install 'sigma-studio[recipes]')"
        ),
    ] = R.recipe,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="rows of your own: --recipe shapes, one folder per stage (DIR/boxes, DIR/structure, DIR/full); "
            "--recipe paper, one folder, filtered per stage by subject count (default: the shapes world's)"
        ),
    ] = None,
    steps: Annotated[
        str | None, typer.Option(help="steps of the three stages, e.g. 1500,1500,2000 (default: the recipe's)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the data and every draw")] = R.seed,
    routing_step: Annotated[
        int | None,
        typer.Option(
            help=f"routing-map levels per subject, stored in the model (default: {SHAPES_ROUTING_STEP} for the "
            f"shapes world, {ROUTING_STEP} for --data-dir rows)"
        ),
    ] = None,  # fmt: skip
    decoder_steps: Annotated[
        int, typer.Option(help="shapes world: steps of the decoder finetuning after the stages (0: none)")
    ] = R.decoder_steps,
    replay: ReplayOpt = R.replay,
    debug: DebugOpt = False,
) -> None:
    """SIGMA-GEN's three-stage curriculum as three chained finetune runs: ours for the shapes world, or the paper's.

    [b]Examples[/]

      sigma sigmagen train --out runs/sigmagen-shapes            [dim]# the shapes world on a CPU[/]

      sigma sigmagen train --out runs/sg-replay --replay 0.5     [dim]# half SIGMA rows: keep the five families[/]

      sigma sigmagen train --model sigma --data-dir rows/ --out runs/sigmagen --steps 3000,3000,6000

      sigma sigmagen train --recipe paper --model sigma --data-dir rows/ --out runs/sigmagen-paper
    """
    from sigma_studio.finetune.sigmagen_recipe import SigmaGenRecipe

    render.setup_logging(debug)
    with render.errors(debug):
        stages = _stages(recipe, steps)
        recipe = SigmaGenRecipe.named(recipe, out=str(out), model=model, data_dir=str(data_dir) if data_dir else None,
                                      stages=stages, seed=seed, routing_step=routing_step,
                                      decoder_steps=decoder_steps, replay=replay)  # fmt: skip
        exported = _run(recipe)
    render.stdout.print(f"[green]✓[/] {escape(str(exported))}  (load it with --model {escape(str(exported))})")


def _stages(recipe: str, steps: str | None) -> tuple:
    """The recipe's stages, with ``--steps`` (one count per stage) when given."""
    from sigma_studio.finetune.sigmagen_recipe import RECIPES, STAGES
    from sigma_studio.model.errors import InputError

    if recipe not in RECIPES:
        raise InputError(f"--recipe {recipe} is not one of {', '.join(RECIPES)}")
    stages = RECIPES[recipe].get("stages", STAGES)
    if steps is None:
        return stages
    counts = [int(x) for x in steps.split(",") if x.strip().isdigit()]
    if len(counts) != len(stages) or min(counts) < 1:
        raise InputError(f"--steps takes {len(stages)} positive counts separated by commas (got {steps!r})")
    return tuple(dataclasses.replace(s, steps=n) for s, n in zip(stages, counts, strict=True))


def _run(recipe):
    """Run the recipe under a Rich progress bar over every stage's steps (plain lines in a log file)."""
    from sigma_studio.finetune.sigmagen_recipe import run

    stages = recipe.stages
    with render.progress(transient=False) as bar:
        task = bar.add_task("sigmagen", total=sum(s.steps for s in stages))

        def report(stage: str, message: str) -> None:
            bar.update(task, description=f"{stage}: {message}")
            if not render.console.is_terminal:
                render.console.print(f"{stage}: {message}")

        def on_step(k: int, s) -> None:
            line = f"{stages[k].name}: step {s.step} loss {s.loss:.4f} · lr {s.lr:.1e}"
            bar.update(task, completed=sum(x.steps for x in stages[:k]) + s.step, description=line)
            if not render.console.is_terminal and s.step % 50 == 0:
                render.console.print(line)

        return run(recipe, report, on_step)


@app.command(name="eval")
@grouped
def eval_cmd(
    *,
    model: Annotated[str, typer.Option("--model", "-m", help="a SIGMA-GEN model directory (or shapes)")],
    data: Annotated[
        Path | None,
        typer.Option(
            help="held-out scenes (the eval/ folder `sigma sigmagen train` writes) \\[default: drawn for "
            f"the model, {DRAWN_PER_COUNT} a subject count]"
        ),
    ] = None,
    per_count: Annotated[int | None, typer.Option(min=1, help="scenes per subject count \\[default: all]")] = None,
    drawn_by: DrawnByOpt = WORLD,
    run: WorldEvalOptions,
    debug: DebugOpt = False,
) -> None:
    """Generate held-out shapes-world scenes from their identity sheet and spatial control and score them by
    pixels: each subject's shape and colour in its region, and the nearer subject shown where two overlap."""
    from rich.table import Table

    from sigma_studio.finetune.sigmagen_recipe import make_eval
    from sigma_studio.model import load_pipeline
    from sigma_studio.model.shapes.sigmagen_eval import evaluate_sigmagen, read_scenes

    render.setup_logging(debug)
    if data is not None and drawn_by != WORLD:
        raise typer.BadParameter("--drawn-by draws the scenes itself: leave out --data", param_hint="--drawn-by")
    drawn = {"drawn_by": drawn_by} if data is None else {}  # --data's scenes: whoever drew them
    with render.errors(debug), tempfile.TemporaryDirectory() as tmp:
        config = run.config()
        scenes = read_scenes(data, per_count) if data else None  # a bad --data is one line, before the model loads
        pipe = load_pipeline(model, mode="cpu")
        if data is None:  # held-out scenes drawn at the model's own routing step and identity-sheet layout
            data = Path(tmp)
            make_eval(data, per_count or DRAWN_PER_COUNT, 0, pipe.arch.routing_step, pipe.arch.sheet_rows, drawn_by)
            scenes = read_scenes(data, per_count)
        with render.progress() as bar:
            task = bar.add_task("scenes", total=None)
            summary, records = evaluate_sigmagen(pipe, data, per_count=per_count, config=config, seed=run.seed,
                                                 save_dir=run.save, on_row=lambda r: bar.advance(task),
                                                 reconstruct=run.reconstruct, scenes=scenes)  # fmt: skip
    what = "true pictures through the autoencoder" if run.reconstruct else "held-out scenes"
    what = f"{what}, drawn by OpenCV" if drawn_by == DRAWN_BY else what
    table = Table(title=f"SIGMA-GEN, shapes world, {what} ({escape(model)})")
    columns = ("subjects", "scenes", "scored", "right", "colour", "shape", "place", "alone", "all right", "extras",
               "overlaps", "ordering")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right", no_wrap=True)
    pct = lambda x: "—" if x != x else f"{x:.0%}"  # noqa: E731 - nan: nothing to score
    for n, s in summary.items():
        table.add_row(n, str(s["scenes"]), str(s["subjects"]), pct(s["right"]), pct(s["colour"]), pct(s["shape"]),
                      pct(s["place"]), pct(s["alone"]), pct(s["scenes_all_right"]), str(s["extras"]), str(s["pairs"]),
                      pct(s["ordering"]))  # fmt: skip
    table.caption = (
        "right: colour, shape and place (IoU >= 0.5 with its box or mask) right, and drawn once · all right: scenes "
        "with every scored subject right and no extra object · ordering: overlaps that show the nearer subject"
    )
    run.show(table, model, summary, records, debug, **drawn)
