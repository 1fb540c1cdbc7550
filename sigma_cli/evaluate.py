"""``sigma eval``: score a ``sigma batch`` folder (or run a benchmark first), compare two runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from . import render
from .batch import EXIT_ALL_FAILED, EXIT_SOME_FAILED
from .options import CacheOpt, DebugOpt, ModelOpt

EXAMPLES = """
[b]Examples[/]

  sigma batch runs/shapes/data/eval --out runs/eval --model shapes && sigma eval runs/eval

  sigma eval runs/eval --metrics shapes,psnr,ssim --compare runs/eval-fast

  sigma eval runs/bench --benchmark Xiaoyan667/SIGMA-Benchmark --model sigma

  sigma eval runs/sg --data data/sigmagen --metrics dinov2,dinov2_subjects,depth_mse_subjects
"""

DataOpt = Annotated[
    str | None,
    typer.Option(
        help="the source RESULTS was made from (as given to `sigma batch`): its rows' meta places the SIGMA-GEN "
        "subjects of the *_subjects metrics \\[default: --benchmark]"
    ),
]


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
    data: DataOpt = None,
    model: ModelOpt = None,
    limit: Annotated[int | None, typer.Option(help="with --benchmark: stop after this many rows")] = None,
    device: Annotated[str, typer.Option(help="where the metric models run")] = "cpu",
    cache_dir: CacheOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Score generated images: per row, per task family and overall; write metrics.json and metrics.csv.

    Metrics that need a hub model say in one line what to download when it is missing; the others still run.
    The *_subjects metrics score each SIGMA-GEN subject's crop (or region) and average per row; they read the
    subjects from the rows' meta in --data, and leave other rows blank (metrics.json: no_subjects).
    Each output must decode and carry its own row's record (row, prompt, references) at the size it records; a row
    whose output does not is not scored, and is named in a warning and in metrics.json (unscored). An output whose
    size differs from its ground truth's is resized (bicubic) to the truth's size before the two are compared, as
    stated after the table (metrics.json: resized_to_truth).

    Exit codes: 0 every row scored, 2 bad input or nothing that can be scored, 4 some rows not scored (or, with
    --benchmark, some rows failed to generate); the others are scored and written.
    """
    from sigma_studio.model.errors import InputError
    from sigma_studio.model.evaluation.metrics import build_metrics
    from sigma_studio.model.evaluation.runner import check_results, evaluate, write_report

    render.setup_logging(debug)
    partial = False
    with render.errors(debug):
        if limit is not None and not benchmark:
            raise InputError(f"--limit {limit} applies only with --benchmark (it limits the rows generated)")
        names = _metric_names(metrics)
        if benchmark:
            partial = _run_benchmark(benchmark, results, model, limit, cache_dir, debug)
        check_results(results)  # before the metric models are looked for (their lines would bury this one)
        if compare is not None and not (compare / "metrics.json").is_file():
            check_results(compare)
        ready, messages = build_metrics(names, cache_dir=cache_dir, device=device)
        for line in by_reason(messages):
            render.warn(line)
        if not ready:
            raise InputError("none of the chosen metrics can run here (see the lines above)")
        data = data or benchmark
        report = evaluate(results, ready, messages, data=data, cache_dir=cache_dir)
        _warn_rows(report, ready)
        json_path, csv_path = write_report(report, results)
        other, comparison = _compared(report, compare, ready, data, cache_dir) if compare is not None else (None, None)
    _finish(report, ready, (json_path, csv_path), other, comparison, partial)


def by_reason(messages: list[str]) -> list[str]:
    """The metrics that cannot run, one line per reason (``clip_t, clip_i: the CLIP model ...``): metrics that share
    a missing model say so once."""
    names: dict[str, list[str]] = {}
    for line in messages:
        name, _, reason = line.partition(": ")
        names.setdefault(reason, []).append(name)
    return [f"{', '.join(group)}: {reason}" for reason, group in names.items()]


def _compared(report, folder: Path, ready, data: str | None, cache_dir: str | None):
    """(the other run's report: read from its metrics.json, or scored now; the comparison of the two)."""
    from sigma_studio.model.evaluation.runner import compare, evaluate, read_report

    fresh = not (folder / "metrics.json").is_file()
    other = evaluate(folder, ready, data=data, cache_dir=cache_dir) if fresh else read_report(folder)
    _warn_rows(other, ready)
    return other, compare(report, other)


def _finish(report, ready, paths, other, comparison, partial: bool) -> None:
    """The tables, the files written, and the exit code (EXIT_SOME_FAILED when rows were not scored or made)."""
    _family_table(report)
    _resize_note(report, ready)
    _subjects_note(report, ready)
    partial = partial or bool(report.unscored)
    missing = f"{len(report.unscored)} rows not scored" if report.unscored else "some rows failed to generate"
    mark = f"[yellow]![/] {missing} (exit {EXIT_SOME_FAILED}):" if partial else "[green]✓[/]"
    render.stdout.print(f"{mark} {escape(str(paths[0]))}  {escape(str(paths[1]))}")
    if other is not None:
        _comparison_table(comparison, report.folder, other.folder)
    if partial:
        raise typer.Exit(EXIT_SOME_FAILED)


def _metric_names(metrics: str | None) -> list[str]:
    """The --metrics list (every metric when not given); an unknown name is an InputError naming the choices."""
    from sigma_studio.model.errors import InputError
    from sigma_studio.model.evaluation.metrics import available_metrics

    names = [n.strip() for n in metrics.split(",") if n.strip()] if metrics else available_metrics()
    unknown = sorted(set(names) - set(available_metrics()))
    if unknown:
        raise InputError(f"--metrics {unknown[0]} is unknown; choose from {', '.join(available_metrics())}")
    return names


def _run_benchmark(
    source: str, out: Path, model: str | None, limit: int | None, cache_dir: str | None, debug: bool
) -> bool:
    """The paper's protocol: every row generated with the released sampler settings, then scored. True when some
    rows failed to generate (the others are scored)."""
    from .batch import batch

    try:
        batch(source=source, out=out, limit=limit, model=model, cache_dir=cache_dir, debug=debug)
    except typer.Exit as exc:
        if exc.exit_code not in (EXIT_ALL_FAILED, EXIT_SOME_FAILED):
            raise
        render.warn(f"some benchmark rows failed to generate (see {out}/failures*.jsonl); scoring the others")
        return True
    return False


SHOWN = 5  # rows named in one warning; metrics.json lists them all


def _warn_rows(report, metrics) -> None:
    """One warning per row that is not scored (the first few), and one for rows without a ground truth."""
    for row_id, reason in list(report.unscored.items())[:SHOWN]:
        render.warn(f"{row_id} is not scored: {reason}")
    if len(report.unscored) > SHOWN:
        render.warn(f"{len(report.unscored) - SHOWN} more rows are not scored (metrics.json lists them: unscored)")
    needing = [m.name for m in metrics if m.needs == "target"]
    if report.no_truth and needing:
        first = ", ".join(report.no_truth[:SHOWN]) + (", ..." if len(report.no_truth) > SHOWN else "")
        render.warn(
            f"{len(report.no_truth)} rows have no ground truth (<row>.gt.png): {', '.join(needing)} are blank for "
            f"them ({first})"
        )


def _resize_note(report, metrics) -> None:
    """Say which outputs are compared with their ground truth at another size, and how."""
    needing = [m.name for m in metrics if m.needs == "target"]
    if not report.resized or not needing:
        return
    row_id, sizes = next(iter(report.resized.items()))
    render.stdout.print(
        f"[dim]resized: {len(report.resized)} outputs differ in size from their ground truth (e.g. {row_id}: "
        f"{sizes}); {', '.join(needing)} compare them resized (bicubic) to the truth's size "
        "(metrics.json: resized_to_truth)[/]"
    )


def _subjects_note(report, metrics) -> None:
    """Say how many rows the per-subject metrics leave blank, and the most common reason."""
    names = [m.name for m in metrics if m.score_subjects is not None]
    if not report.no_subjects or not names:
        return
    reasons: dict[str, int] = {}
    for why in report.no_subjects.values():
        reasons[why] = reasons.get(why, 0) + 1
    why, count = max(reasons.items(), key=lambda kv: kv[1])
    render.stdout.print(
        f"[dim]no subjects: {len(report.no_subjects)} of {len(report.rows)} rows have no SIGMA-GEN subjects, so "
        f"{', '.join(names)} are blank for them ({count}: {escape(why)}; metrics.json: no_subjects)[/]"
    )


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
        protocol = escape(f" [{m['protocol']}]") if m.get("protocol") else ""
        render.stdout.print(f"[dim]{m['label']}{escape(model)}{protocol}: {escape(m['mirrors'])}[/]")


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
