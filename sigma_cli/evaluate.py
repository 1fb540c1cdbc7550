"""``sigma eval``: score a ``sigma batch`` folder (or run a benchmark first), compare two runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from . import render
from .options import CacheOpt, DebugOpt, ModelOpt

EXAMPLES = """
[b]Examples[/]

  sigma batch runs/shapes/data/eval --out runs/eval --model shapes && sigma eval runs/eval

  sigma eval runs/eval --metrics shapes,psnr,ssim --compare runs/eval-fast

  sigma eval runs/bench --benchmark Xiaoyan667/SIGMA-Benchmark --model sigma
"""


def evaluate_cmd(
    results: Annotated[Path, typer.Argument(help="a `sigma batch` output folder", metavar="RESULTS")],
    metrics: Annotated[
        str | None, typer.Option(help="comma-separated metric names \\[default: every metric that can run here]")
    ] = None,
    compare: Annotated[
        Path | None, typer.Option(help="another batch folder of the same rows, shown side by side")
    ] = None,
    benchmark: Annotated[
        str | None, typer.Option(help="generate RESULTS from this benchmark first (HF id or parquet folder)")
    ] = None,
    model: ModelOpt = None,
    limit: Annotated[int | None, typer.Option(help="with --benchmark: stop after this many rows")] = None,
    device: Annotated[str, typer.Option(help="where the metric models run")] = "cpu",
    cache_dir: CacheOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Score generated images: per row, per task family and overall; write metrics.json and metrics.csv.

    Metrics that need a hub model say in one line what to download when it is missing; the others still run.
    """
    from sigma_studio.model.errors import InputError
    from sigma_studio.model.evaluation.metrics import available_metrics, build_metrics
    from sigma_studio.model.evaluation.runner import compare as compare_runs
    from sigma_studio.model.evaluation.runner import evaluate, read_report, write_report

    render.setup_logging(debug)
    with render.errors(debug):
        names = [n.strip() for n in metrics.split(",") if n.strip()] if metrics else available_metrics()
        unknown = sorted(set(names) - set(available_metrics()))
        if unknown:
            raise InputError(f"--metrics {unknown[0]} is unknown; choose from {', '.join(available_metrics())}")
        if benchmark:
            _run_benchmark(benchmark, results, model, limit, cache_dir)
        ready, messages = build_metrics(names, cache_dir=cache_dir, device=device)
        for line in messages:
            render.warn(line)
        if not ready:
            raise InputError("none of the chosen metrics can run here (see the lines above)")
        report = evaluate(results, ready, messages)
        json_path, csv_path = write_report(report, results)
        other = None
        if compare is not None:
            other = read_report(compare) if (compare / "metrics.json").is_file() else evaluate(compare, ready)
            comparison = compare_runs(report, other)
    _family_table(report)
    render.stdout.print(f"[green]✓[/] {escape(str(json_path))}  {escape(str(csv_path))}")
    if other is not None:
        _comparison_table(comparison, report.folder, other.folder)


def _run_benchmark(source: str, out: Path, model: str | None, limit: int | None, cache_dir: str | None) -> None:
    """The paper's protocol: every row generated with the released sampler settings, then scored."""
    from .batch import batch

    batch(source=source, out=out, limit=limit, model=model, cache_dir=cache_dir)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _family_table(report) -> None:
    table = Table(title=f"{report.folder}: {len(report.rows)} rows", title_justify="left")
    table.add_column("family")
    table.add_column("rows", justify="right")
    for m in report.metrics:
        table.add_column(f"{m['label']} {'↑' if m['higher'] else '↓'}", justify="right")
    for family in report.family_names():
        count = sum(1 for f in report.families.values() if f == family)
        table.add_row(family or "(none)", str(count), *(_fmt(report.mean(m["name"], family)) for m in report.metrics))
    table.add_row(
        "[b]all[/]", str(len(report.rows)), *(f"[b]{_fmt(report.mean(m['name']))}[/]" for m in report.metrics)
    )
    render.stdout.print(table)
    for m in report.metrics:
        model = f" ({m['model']})" if m["model"] else ""
        render.stdout.print(f"[dim]{m['label']}{escape(model)}: {escape(m['mirrors'])}[/]")


def _comparison_table(rows: list[dict], base: str, other: str) -> None:
    table = Table(title=f"B = {other}\nA = {base}", title_justify="left")
    for col in ("metric", "rows", "A", "B", "B - A", "95 % CI"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for r in rows:
        lo, hi = r["ci95"]
        better = (r["difference"] > 0) == r["higher"]
        sure = lo is not None and (lo > 0 or hi < 0)
        style = ("green" if better else "red") if sure else "dim"
        table.add_row(r["label"], str(r["rows"]), _fmt(r["base"]), _fmt(r["other"]),
                      f"[{style}]{r['difference']:+.4f}[/]", escape(f"[{_fmt(lo)}, {_fmt(hi)}]"))  # fmt: skip
    render.stdout.print(table)
