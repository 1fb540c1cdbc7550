"""``sigma batch``: one image per row of SIGMA-format parquet data, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sigma_studio.model.hub import HubOptions

from . import render
from .options import (
    MODE,
    BatchLayout,
    BatchSize,
    CacheOpt,
    CfgImg,
    CfgInterval,
    CfgText,
    DebugOpt,
    GpuMemOpt,
    GroupMask,
    ModelOpt,
    ModeOpt,
    OffloadOpt,
    Renorm,
    RenormMin,
    Shift,
    Steps,
    absolute,
    generation_config,
    loader_config,
    parse_interval,
    parse_size,
)


def batch(
    source: Annotated[
        str, typer.Argument(help="parquet file, folder of parquet files, or HF dataset id", metavar="SOURCE")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (an existing one is resumed)")],
    limit: Annotated[int | None, typer.Option(help="stop after this many rows")] = None,
    size: BatchSize = None,
    steps: Steps = None,
    cfg_text: CfgText = None,
    cfg_img: CfgImg = None,
    cfg_interval: CfgInterval = None,
    renorm: Renorm = None,
    renorm_min: RenormMin = None,
    shift: Shift = None,
    seed: Annotated[int, typer.Option(help="seed of every row")] = 0,
    layout: BatchLayout = None,
    group_mask: GroupMask = None,
    model: ModelOpt = None,
    mode: ModeOpt = MODE,
    max_gpu_memory: GpuMemOpt = None,
    offload_dir: OffloadOpt = None,
    cache_dir: CacheOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Generate an image for every row of SIGMA-format parquet data (the last image is the ground truth).

    Each output PNG carries the same record as `sigma generate` writes; `summary.json` counts the whole folder.
    """
    from sigma_studio.model import load_pipeline
    from sigma_studio.model.batch import run_batch
    from sigma_studio.model.dataset import iter_rows, parquet_files
    from sigma_studio.model.files import check_output_dir

    render.setup_logging(debug)
    with render.errors(debug):
        config = generation_config(
            None,
            **dict(steps=steps, cfg_text_scale=cfg_text, cfg_img_scale=cfg_img, timestep_shift=shift, seed=seed),
            **dict(
                cfg_interval=parse_interval(cfg_interval),
                cfg_renorm_type=renorm,
                cfg_renorm_min=renorm_min,
                size=parse_size(size),
            ),
            **dict(layout=layout or "trained", group_mask=group_mask),
        )
        check_output_dir(out)
        files = parquet_files(source, HubOptions(cache_dir=cache_dir))  # a missing source stops here
        loader = loader_config(absolute(model or "sigma"), mode, max_gpu_memory, offload_dir, cache_dir)
        with render.console.status(f"Loading {loader.model} ({loader.mode})…", spinner="dots"):
            pipe = load_pipeline(loader)
        with render.progress(transient=False) as bar:
            task = bar.add_task("Rows", total=limit)
            summary = run_batch(pipe, iter_rows(files), out, config, limit=limit, on_row=lambda r, s: bar.advance(task))
    render.stdout.print(
        f"[green]✓[/] {summary.generated} generated, {summary.skipped_existing} already done, "
        f"[{'red' if summary.failed else 'dim'}]{summary.failed} failed[/] in {summary.seconds:.1f} s "
        f"→ {escape(str(out))}"
    )
    if summary.failed:
        render.console.print(f"[dim]failures are listed in {escape(str(out / 'failures.jsonl'))}[/]")
