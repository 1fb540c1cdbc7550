"""``sigma batch``: one image per row of SIGMA-format parquet data, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sigma_studio.model.hub import HubOptions

from . import render
from .groups import grouped
from .options import BatchLayout, BatchSize, DebugOpt, LoadOptions, SamplerOptions

EXIT_ALL_FAILED = 3  # every row this run tried failed: nothing usable was made
EXIT_SOME_FAILED = 4  # some rows failed (listed in failures*.jsonl); the others are done


@grouped
def batch(
    source: Annotated[
        str, typer.Argument(help="parquet file, folder of parquet files, or HF dataset id", metavar="SOURCE")
    ],
    *,
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (an existing one is resumed)")],
    limit: Annotated[int | None, typer.Option(help="stop after this many rows (1 or more)")] = None,
    size: BatchSize = None,
    seed: Annotated[int, typer.Option(help="seed of every row")] = 0,
    layout: BatchLayout = None,
    sampler: SamplerOptions,
    load: LoadOptions,
    shard: Annotated[
        str | None, typer.Option(help="do only share I of N (0-based), e.g. 0/4 in a job array; torchrun shards itself")
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Generate an image for every row of SIGMA-format parquet data (the last image is the ground truth).

    Each output PNG carries the same record as `sigma generate` writes; `summary.json` counts the whole folder.
    Under torchrun (one node or many) the ranks share the rows and the folder; --shard I/N does the same for jobs
    started separately. Any shard resumes on its own; an output that is truncated, resized or another row's is
    generated again.

    Exit codes: 0 every row done, 2 bad input (nothing generated), 3 every row failed, 4 some rows failed (the
    failures are listed in failures*.jsonl). A row fails when its data cannot be read or its instruction places an
    image the row does not have.

    [b]Examples[/]

      sigma batch ./eval-parquet --out runs/eval --model shapes

      torchrun --nproc-per-node 8 -m sigma_studio.cli batch Xiaoyan667/SIGMA-dataset --out runs/eval

      sigma batch ./data --out runs/eval --shard $SLURM_ARRAY_TASK_ID/16
    """
    from sigma_studio.model.data.batch import Shard, check_limit, run_batch
    from sigma_studio.model.data.dataset import iter_rows, parquet_files
    from sigma_studio.model.files import check_output_dir

    render.setup_logging(debug)
    with render.errors(debug):
        check_limit(limit)
        config = sampler.config(size=size, seed=seed, layout=layout or "trained")
        part = Shard.parse(shard) if shard else Shard.from_env()
        check_output_dir(out)
        files = parquet_files(source, HubOptions(cache_dir=load.cache_dir))  # a missing source stops here
        pipe = _load(_sized(load.loader_config(), config.size))
        label = "Rows" if part.count == 1 else f"Rows of shard {part.index}/{part.count}"
        with render.progress(transient=False) as bar:
            task = bar.add_task(label, total=limit if part.count == 1 else None)  # (a shard's share is not known)
            summary = run_batch(
                pipe, iter_rows(files), out, config, limit=limit, shard=part, on_row=lambda r, s: bar.advance(task)
            )
        _merge_when_ranks_are_done(out, shard is None and part.count > 1)
    code = _print_summary(summary, out)
    if code:
        raise typer.Exit(code)


def _sized(loader, size: tuple[int, int] | None):
    """``loader``, once a ``--size`` its model cannot make is refused as ``sigma generate`` refuses it (not as every
    row failing), before anything loads."""
    from sigma_studio.model.request.build import check_size
    from sigma_studio.model.weights.preflight import preflight_arch

    if size is not None:
        check_size(size, preflight_arch(loader))
    return loader


def _load(loader):
    """The pipeline, on this rank's own GPU under torchrun."""
    from sigma_studio.model import load_pipeline

    loader = loader.replace(device=_rank_device(loader.mode))
    with render.console.status(f"Loading {loader.model} ({loader.mode})…", spinner="dots"):
        return load_pipeline(loader)


def _print_summary(summary, out: Path) -> int:
    """The final line: what this run did, and which exit code it ends with (returned)."""
    code = exit_code(summary)
    mark = {0: "[green]✓[/]", EXIT_SOME_FAILED: "[yellow]![/]"}.get(code, "[red]✗[/]")
    redone = f", {summary.redone} broken outputs redone" if summary.redone else ""
    verdict = {EXIT_ALL_FAILED: ": every row failed", EXIT_SOME_FAILED: ": some rows failed"}.get(code, "")
    render.stdout.print(
        f"{mark} {summary.generated} generated, {summary.skipped_existing} already done{redone}, "
        f"[{'red' if summary.failed else 'dim'}]{summary.failed} failed[/] in {summary.seconds:.1f} s "
        f"→ {escape(str(out))}{verdict}" + (f" (exit {code})" if code else "")
    )
    if summary.failed:
        render.console.print(f"[dim]failures are listed in {escape(str(out))}/failures*.jsonl[/]")
    return code


def exit_code(summary) -> int:
    """0 when no row failed, EXIT_ALL_FAILED when every row tried failed, EXIT_SOME_FAILED otherwise."""
    if not summary.failed:
        return 0
    return EXIT_ALL_FAILED if summary.failed == summary.rows else EXIT_SOME_FAILED


def _rank_device(mode: str) -> str | None:
    """Under torchrun each rank generates on its own GPU (LOCAL_RANK); elsewhere the loader decides."""
    import os

    import torch

    local = os.environ.get("LOCAL_RANK")
    if local is None or mode == "cpu" or not torch.cuda.is_available():
        return None
    return f"cuda:{int(local) % torch.cuda.device_count()}"


def _merge_when_ranks_are_done(out: Path, torchrun: bool) -> None:
    """Under torchrun, rank 0 waits for every rank (gloo barrier), then writes the folder's summary."""
    if not torchrun:
        return
    import torch.distributed as dist

    from sigma_studio.model.data.batch import write_summary

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()
    if dist.get_rank() == 0:
        summary = write_summary(out)
        render.console.print(f"[dim]all ranks done: {summary['generated']} outputs, {summary['failed']} failed[/]")
    dist.destroy_process_group()
