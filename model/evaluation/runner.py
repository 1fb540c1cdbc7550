"""``sigma eval``: metrics over a ``sigma batch`` folder, per row, per task family and overall; two runs compared.

A batch folder holds each output with its record (prompt, references, sequence), the ground truth and the
references (``records*.jsonl``, ``<row>.png``, ``<row>.gt.png``, ``references/``). The task family of a row is its
parquet shard's name (``compose-000012`` -> ``compose``), as SIGMA's data and benchmark are split by task.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..batch import read_records
from ..errors import InputError
from ..files import atomic_write, write_json
from ..images import open_image, to_rgb
from .metrics import EvalRow, Metric

BOOTSTRAP_SAMPLES = 2000


def family_of(row_id: str) -> str:
    return row_id.rsplit("-", 1)[0] if "-" in row_id else ""


def _image(path: Path) -> Image.Image | None:
    return to_rgb(open_image(path)) if path.is_file() else None


def load_rows(folder: str | Path) -> list[EvalRow]:
    """Every generated row of a batch folder, with its ground truth, references and layout image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder: give the --out folder of a `sigma batch` run")
    entries = read_records(folder)
    if not entries:
        raise InputError(f"{folder} holds no records*.jsonl: run `sigma batch ... --out {folder}` first")
    rows = []
    for entry in entries:
        output = _image(folder / entry["output"])
        if output is None:
            continue  # an output deleted since: the record alone cannot be scored
        files = {img["name"]: img.get("file") for img in entry.get("images", [])}
        refs = tuple(img for img in (_image(Path(f)) for n, f in files.items() if f) if img is not None)
        layout_names = [s["image"] for s in entry.get("sequence", []) if "<layout>" in s.get("tokens", [])]
        layout_file = files.get(layout_names[-1]) if layout_names else None
        rows.append(
            EvalRow(
                row_id=entry["row_id"],
                family=family_of(entry["row_id"]),
                output=output,
                target=_image(folder / f"{entry['row_id']}.gt.png"),
                prompt=entry.get("prompt", ""),
                references=refs,
                layout=_image(Path(layout_file)) if layout_file else None,
            )
        )
    return rows


@dataclass
class Report:
    """Metric values per row, and their means per family and overall (None where a metric does not apply)."""

    folder: str
    metrics: list[dict]  # name, label, model, mirrors, higher_is_better
    rows: dict[str, dict[str, float | None]] = field(default_factory=dict)  # row_id -> metric -> value
    families: dict[str, str] = field(default_factory=dict)  # row_id -> family
    skipped: list[str] = field(default_factory=list)  # one line per metric that could not be set up

    def mean(self, metric: str, family: str | None = None) -> float | None:
        values = [
            v[metric]
            for row_id, v in self.rows.items()
            if v.get(metric) is not None and (family is None or self.families[row_id] == family)
        ]
        return float(np.mean(values)) if values else None

    def family_names(self) -> list[str]:
        return sorted(set(self.families.values()))

    def to_json(self) -> dict:
        names = [m["name"] for m in self.metrics]
        return {
            "folder": self.folder,
            "metrics": self.metrics,
            "overall": {n: self.mean(n) for n in names},
            "families": {f: {n: self.mean(n, f) for n in names} for f in self.family_names()},
            "rows": self.rows,
            "skipped": self.skipped,
        }


def evaluate(folder: str | Path, metrics: list[Metric], skipped: list[str] | None = None) -> Report:
    rows = load_rows(folder)
    report = Report(str(Path(folder).resolve()), [_describe(m) for m in metrics], skipped=list(skipped or []))
    report.families = {r.row_id: r.family for r in rows}
    report.rows = {r.row_id: {} for r in rows}
    for metric in metrics:
        for row, value in zip(rows, metric.compute(rows), strict=True):
            ok = value is not None and math.isfinite(float(value))
            report.rows[row.row_id][metric.name] = float(value) if ok else None
    return report


def _describe(m: Metric) -> dict:
    return {"name": m.name, "label": m.label, "model": m.model, "mirrors": m.mirrors, "higher": m.higher_is_better}


def write_report(report: Report, folder: str | Path) -> tuple[Path, Path]:
    """``metrics.json`` (everything) and ``metrics.csv`` (one line per row), both written atomically."""
    folder = Path(folder)
    names = [m["name"] for m in report.metrics]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["row_id", "family", *names])
    for row_id, values in report.rows.items():
        writer.writerow([row_id, report.families[row_id], *("" if values[n] is None else values[n] for n in names)])
    csv_path = atomic_write(folder / "metrics.csv", lambda f: f.write(buf.getvalue().encode()))
    return write_json(folder / "metrics.json", report.to_json()), csv_path


def bootstrap_difference(a: list[float], b: list[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0):
    """(mean of b - a, 95 % interval) over paired rows, by resampling the rows (a fixed seed: the same answer on
    every run)."""
    diffs = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if diffs.size == 0:
        return None, (None, None)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, diffs.size, size=(samples, diffs.size))].mean(axis=1)
    return float(diffs.mean()), (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def compare(base: Report, other: Report) -> list[dict]:
    """Per metric both means over the rows the two runs share, the difference (other - base) and its 95 % CI."""
    shared = sorted(set(base.rows) & set(other.rows))
    if not shared:
        raise InputError(f"{base.folder} and {other.folder} share no rows: compare runs of the same data")
    out = []
    for m in base.metrics:
        name = m["name"]
        pairs = [(base.rows[r].get(name), other.rows[r].get(name)) for r in shared]
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
        if not pairs:
            continue
        a, b = zip(*pairs, strict=True)
        diff, (lo, hi) = bootstrap_difference(list(a), list(b))
        means = {"base": float(np.mean(a)), "other": float(np.mean(b)), "difference": diff, "ci95": [lo, hi]}
        out.append({"metric": name, "label": m["label"], "rows": len(pairs), **means, "higher": m["higher"]})
    return out


def read_report(folder: str | Path) -> Report:
    """A report written by :func:`write_report` (so ``--compare`` does not recompute the other run)."""
    path = Path(folder) / "metrics.json"
    data = json.loads(path.read_text())
    families = {}
    for row_id in data["rows"]:
        families[row_id] = family_of(row_id)
    return Report(data["folder"], data["metrics"], data["rows"], families, data.get("skipped", []))
