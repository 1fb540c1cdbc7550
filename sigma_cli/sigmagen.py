"""``sigma sigmagen make``: SIGMA-GEN training rows from annotated pictures (COCO-style) or shapes-world scenes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sigma_studio.model.sigmagen import PRECISIONS, SigmaGenOptions

from . import render
from .options import DebugOpt, OverwriteOpt

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", help="SIGMA-GEN: training data from annotations.")
D = SigmaGenOptions()


@app.command()
def make(
    out: Annotated[Path, typer.Option("--out", "-o", help="the parquet file to write")],
    coco: Annotated[Path | None, typer.Option(help="COCO-style instance annotations (JSON)")] = None,
    images: Annotated[Path | None, typer.Option(help="with --coco: the folder of the pictures")] = None,
    depth: Annotated[
        Path | None, typer.Option(help="with --coco: depth maps DEPTH/<stem>.png (brighter = nearer)")
    ] = None,
    shapes: Annotated[int | None, typer.Option(help="instead: this many shapes-world scenes of 2-5 things")] = None,
    max_subjects: Annotated[int, typer.Option(help="largest instances kept per picture")] = D.max_subjects,
    min_area: Annotated[float, typer.Option(help="smallest instance, as a fraction of the picture")] = D.min_area,
    precision: Annotated[
        str, typer.Option(help="structure per subject, drawn among: " + ",".join(PRECISIONS))
    ] = ",".join(D.precision),
    channel_drop: Annotated[float, typer.Option(help="chance to zero each spatial-control channel")] = D.channel_drop,
    crop_jitter: Annotated[float, typer.Option(help="identity crops move/grow by up to this")] = D.crop_jitter,
    flip: Annotated[float, typer.Option(help="chance to mirror an identity crop")] = D.flip,
    compose_share: Annotated[float, typer.Option(help="share of 'to compose: <caption>' prompts")] = D.compose_share,
    full_depth: Annotated[
        float, typer.Option(help="share of rows whose structure is the whole scene's depth (needs depth maps)")
    ] = D.full_depth,
    tile: Annotated[int, typer.Option(help="identity-sheet cell size in pixels")] = D.tile,
    seed: Annotated[int, typer.Option(help="seed of every random choice")] = D.seed,
    overwrite: OverwriteOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Write SIGMA-format rows [identity sheet, spatial control, target] that `sigma finetune` trains on.

    [b]Examples[/]

      sigma sigmagen make --coco instances.json --images pictures/ --out data/sigmagen/train.parquet

      sigma sigmagen make --shapes 2000 --out data/sigmagen-shapes/train.parquet
    """
    from sigma_studio.model.errors import InputError
    from sigma_studio.model.files import check_output_file
    from sigma_studio.model.shapes.tasks import write_parquet
    from sigma_studio.model.sigmagen import coco_scenes, rows, shapes_scenes

    render.setup_logging(debug)
    with render.errors(debug):
        options = SigmaGenOptions(
            max_subjects, min_area, tuple(p.strip() for p in precision.split(",") if p.strip()), channel_drop,
            crop_jitter, flip, compose_share, full_depth, tile, seed,
        )  # fmt: skip
        if (coco is None) == (shapes is None):
            raise InputError("give either --coco FILE --images DIR, or --shapes N")
        if coco is not None and images is None:
            raise InputError("--coco needs --images DIR (the folder its file names are relative to)")
        path = check_output_file(out, overwrite)
        scenes = coco_scenes(coco, images, depth) if coco is not None else shapes_scenes(shapes, seed)
        stats: dict = {}
        count = write_parquet(path, rows(scenes, options, stats))
        if not count:
            path.unlink(missing_ok=True)
            raise InputError("no usable scene: every picture was unreadable or had no instance large enough")
    skipped = stats.get("skipped", 0)
    render.stdout.print(f"[green]✓[/] {count} rows → {escape(str(path))}  [dim]({skipped} scenes skipped)[/]")
    render.stdout.print(f"[dim]options: {escape(str(dataclasses.asdict(options)))}[/]")
