"""What each suite leaves behind: its JSON file (where the suite does not write its own) and the table and lines
printed to the terminal. The formats are pinned: docs/PERF.md quotes them."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from rich.table import Table

from sigma_studio.model.files import write_json

from .. import render
from .speed import SpeedRow
from .throughput import ThroughputRow


def report_modes(report: dict, out: Path) -> None:
    """The modes suite's table (``benchmark`` has written ``out``), its equivalence errors and failed modes."""
    table = Table(title=f"{report['preset']} on {report['device']} · {report['size']}px · {report['steps']} steps · "
                        f"matmul {report['matmul_tflops']:.1f} TFLOP/s")  # fmt: skip
    for col in ("mode", "case", "s / image", "s / step", "outside loop s", "peak GiB", "TFLOP", "of peak"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        table.add_row(r["mode"], r["case"], f"{r['seconds']:.2f}", f"{r['seconds_per_step']:.3f}",
                      f"{r['outside_loop_seconds']:.2f}", f"{r['peak_gib']:.1f}", f"{r['tflop']:.1f}",
                      f"{100 * r['fraction_of_peak']:.0f}%")  # fmt: skip
    render.stdout.print(table)
    for mode, err in report["equivalence_rel_error"].items():
        render.stdout.print(f"{mode}: batched vs plain branches, relative error of the final latents {err:.2e}")
    for mode, msg in report["errors"].items():
        render.console.print(f"[yellow]{mode} did not run:[/] {msg}")
    render.stdout.print(f"report: {out}")


def report_layouts(report: dict, out: Path) -> None:
    """Write the layouts suite's report to ``out``; print its table and ratios."""
    write_json(out, report)
    size, steps = report["size"], report["steps"]
    table = Table(title=f"mid model ({report['params_m']:.0f} M parameters, no ViT) · 2 references · {size}px · "
                        f"{steps} steps · {report['threads']} threads")  # fmt: skip
    for col in ("layout", "prefill", "s / image", "prefill s", "s / step", "context tokens"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        table.add_row(r["layout"], r["prefill"], f"{r['seconds']:.2f}", f"{r['prefill_seconds']:.2f}",
                      f"{r['step_seconds']:.3f}", ", ".join(map(str, r["context_tokens"])))  # fmt: skip
    render.stdout.print(table)
    for name, ratio in report["ratios"].items():
        render.stdout.print(f"{name}: {ratio:.2f}x")
    render.stdout.print(f"report: {out}")


def report_speed(rows: list[SpeedRow], out: Path) -> None:
    """Write the speed suite's rows to ``out``; print them against the exact path (the first row)."""
    write_json(out, [asdict(r) for r in rows])
    exact = rows[0]
    table = Table(title="fewer evaluations · shapes model, held-out rows · mid model, SIGMA case, 256 px")
    for col in ("setting", "forwards / image", "fewer", "s / image", "faster", "accuracy", "Δ points", "PSNR vs exact",
                "mid s", "mid faster"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in rows:
        psnr = "exact" if r.psnr_vs_exact is None else f"{r.psnr_vs_exact:.1f} dB"
        fewer = exact.forwards_per_image / r.forwards_per_image
        table.add_row(r.setting, f"{r.forwards_per_image:.1f}", f"{fewer:.2f}x",
                      f"{r.seconds_per_image:.3f}", f"{exact.seconds_per_image / r.seconds_per_image:.2f}x",
                      f"{r.accuracy:.1%}", f"{100 * (r.accuracy - exact.accuracy):+.1f}", psnr,
                      f"{r.mid_seconds:.2f}", f"{exact.mid_seconds / r.mid_seconds:.2f}x")  # fmt: skip
    render.stdout.print(table)
    for r in rows:
        render.stdout.print(f"{r.setting}: " + ", ".join(f"{k} {v:.0%}" for k, v in r.families.items()))
    render.stdout.print(f"report: {out}")


def report_train_memory(report: dict, out: Path) -> None:
    """Write the train-memory suite's report to ``out``; print the peaks per rank of each load."""
    write_json(out, report)
    table = Table(title=f"finetune, {report['ranks']} CPU ranks, one step · {report['params_m']:.0f} M parameters "
                        f"({report['float32_gib']:.2f} GiB in float32)")  # fmt: skip
    for col in ("load", "after setup", "after one step", "after the save"):
        table.add_column(col + (" (GiB per rank)" if col != "load" else ""), justify="right")
    for load, r in report["loads"].items():
        if "error" in r:
            table.add_row(load, r["error"], "", "")
            continue
        peaks = r["peak_gib_per_rank"]
        table.add_row(load, *(", ".join(f"{p[stage]:.2f}" for p in peaks) for stage in ("setup", "step", "save")))
    render.stdout.print(table)
    render.stdout.print(f"report: {out}")


def report_device(report: dict, scale: str) -> None:
    """The device check: first the headline table (case (a) and (b) under each combination, against exact), then
    the profile's shares, FP8, throughput, and each part's status."""
    parts = report["parts"]
    cases = (parts.get("cases") or {}).get("result") or {}
    results = cases.get("results", {})
    if results:
        table = Table(title=f"{cases.get('size')} px · {cases.get('steps')} steps · {report['device']}")
        for col in ("combination", "(a) s", "(a) vs exact", "(b) s", "(b) vs exact", "(b) of peak"):
            table.add_column(col, justify="right")
        names = dict.fromkeys(key.rsplit("/", 1)[0] for key in results)
        for name in names:
            cells = []
            for case in ("a", "b"):
                r, base = results.get(f"{name}/{case}"), results.get(f"exact/{case}")
                ok = isinstance(r, dict)
                cells.append(f"{r['seconds']:.2f}" if ok else "—" if r is None else "failed")
                ratio = base["seconds"] / r["seconds"] if ok and isinstance(base, dict) else None
                cells.append(f"{ratio:.2f}x" if ratio else "—")
            b = results.get(f"{name}/b")
            peak = f"{100 * b['fraction_of_peak']:.0f}%" if isinstance(b, dict) else "—"
            table.add_row(name, *cells, peak)
        render.stdout.print(table)
    _print_part_lines(parts)
    table = Table(title=f"device check ({scale}) on {report['device']}")
    for col in ("part", "status", "seconds"):
        table.add_column(col)
    for part, r in parts.items():
        table.add_row(part, r["status"][:100], f"{r['seconds']:.1f}")
    render.stdout.print(table)


def _print_part_lines(parts: dict) -> None:
    prof = (parts.get("profile") or {}).get("result") or {}
    if prof.get("shares"):
        render.stdout.print(
            "profile, two steps of (b): " + ", ".join(f"{k} {v:.0%}" for k, v in prof["shares"].items())
        )
    if prof.get("branches"):
        render.stdout.print(
            "step with 1/2/3 branches: " + ", ".join(f"{v * 1e3:.0f} ms" for v in prof["branches"].values())
        )
    fp8 = (parts.get("fp8") or {}).get("result") or {}
    for key, value in fp8.items():
        if isinstance(value, float):
            render.stdout.print(f"fp8 {key}: {value:.4f}")
        elif isinstance(value, dict) and "seconds" in value:
            render.stdout.print(f"{key}: {value['seconds']:.2f} s, peak {value['peak_gib']:.1f} GiB")
    rows = ((parts.get("throughput") or {}).get("result") or {}).get("rows", [])
    for r in rows:
        render.stdout.print(f"{r['requests']} requests together: {r['together_per_minute']:.1f} images/min "
                            f"(apart {r['apart_per_minute']:.1f}, {r['speedup']:.2f}x)")  # fmt: skip


def report_throughput(rows: list[ThroughputRow], out: Path, where: str = "mid model on the CPU") -> None:
    """Write the throughput suite's rows to ``out``; print images per minute together against apart."""
    write_json(out, [asdict(r) for r in rows])
    table = Table(title=f"requests of one size generated together · {where}")
    for col in ("requests", "together s", "apart s", "images / min together", "images / min apart", "speed-up",
                "max rel. error"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r.requests), f"{r.together_seconds:.2f}", f"{r.apart_seconds:.2f}",
                      f"{r.together_per_minute:.1f}", f"{r.apart_per_minute:.1f}", f"{r.speedup:.2f}x",
                      f"{r.max_rel_error:.1e}")  # fmt: skip
    render.stdout.print(table)
    render.stdout.print(f"report: {out}")
