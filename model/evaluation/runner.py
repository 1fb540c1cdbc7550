"""``sigma eval``: metrics over a ``sigma batch`` folder, per row, per task family and overall; two runs compared.

A batch folder holds each output with its record (prompt, references, sequence), the ground truth and the
references (``records*.jsonl``, ``<row>.png``, ``<row>.gt.png``, ``references/``). The task family of a row is its
parquet shard's name (``compose-000012`` -> ``compose``), as SIGMA's data and benchmark are split by task.

Every output is checked against the row it is scored for before it is scored: it must decode in full and carry
that row's record (row id, prompt, references) at the size the record names. A row that fails the check is not
scored; it is listed, with the reason, in ``unscored``. An output whose size differs from its ground truth's is
resized (bicubic) to the truth's size before the two are compared, and listed in ``resized_to_truth``. A folder
where nothing can be scored is an error.

The per-subject metrics need each SIGMA-GEN row's subjects: the rows' meta is read again from the source the folder
was made from (``data``, see :mod:`.subjects`). A row without subjects is scored by every other metric; it is listed,
with the reason, in ``no_subjects``, and each subject's own value is in ``per_subject``.
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

from ..data.batch import output_problem, read_png, read_records
from ..errors import InputError
from ..files import atomic_write, write_json
from .base import SubjectValues
from .metrics import EvalRow, Metric
from .subjects import NO_DATA, SHEET_TOKENS, RowMeta, read_metas, row_subjects, tagged

BOOTSTRAP_SAMPLES = 2000


def family_of(row_id: str) -> str:
    return row_id.rsplit("-", 1)[0] if "-" in row_id else ""


def _image(path: Path) -> Image.Image | None:
    """A reference, layout or ground-truth image (None when the file is absent); a broken one is an InputError."""
    return read_png(path)[0] if path.is_file() else None


@dataclass
class LoadedRows:
    """The rows of a batch folder that can be scored, and why the others cannot."""

    rows: list[EvalRow] = field(default_factory=list)
    unscored: dict[str, str] = field(default_factory=dict)  # row_id -> why it is not scored
    resized: dict[str, str] = field(default_factory=dict)  # row_id -> "WxH -> WxH": output resized to its truth
    no_subjects: dict[str, str] = field(default_factory=dict)  # row_id -> why it has no SIGMA-GEN subjects

    @property
    def no_truth(self) -> list[str]:
        return [r.row_id for r in self.rows if r.target is None]


def check_results(folder: str | Path) -> Path:
    """``folder`` if it is a batch run's output folder (it holds its records); refused in one line otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder: give the --out folder of a `sigma batch` run")
    if not read_records(folder):
        raise InputError(f"{folder} holds no records*.jsonl: run `sigma batch ... --out {folder}` first")
    return folder


def load_rows(folder: str | Path, data: str | None = None, cache_dir: str | None = None) -> LoadedRows:
    """Every generated row of a batch folder whose output is its own, with its ground truth, references, layout
    image and (with ``data``, the source of ``sigma batch``) SIGMA-GEN subjects; the others are listed with the
    reason."""
    folder = check_results(folder)
    entries = read_records(folder)
    metas = read_metas(data, {str(e["row_id"]) for e in entries}, cache_dir) if data else None
    loaded = LoadedRows()
    for entry in entries:
        row_id = str(entry["row_id"])
        try:
            row, why = _row(folder, row_id, entry, metas)
        except InputError as exc:
            loaded.unscored[row_id] = str(exc)
            continue
        loaded.rows.append(row)
        if why is not None:
            loaded.no_subjects[row_id] = why
        if row.target is not None and row.target.size != row.output.size:
            (ow, oh), (tw, th) = row.output.size, row.target.size
            loaded.resized[row_id] = f"{ow}x{oh} -> {tw}x{th}"
    return loaded


def _row(folder: Path, row_id: str, entry: dict, metas: dict[str, RowMeta] | None) -> tuple[EvalRow, str | None]:
    """One row to score, and why it has no SIGMA-GEN subjects (None: it has); InputError when its output is not the
    row's own (see :func:`model.data.batch.output_problem`) or one of its images is broken."""
    output, problem = output_problem(folder / str(entry.get("output", "")), row_id, entry=entry)
    if problem is not None:
        raise InputError(problem)
    files = {img["name"]: img.get("file") for img in entry.get("images", [])}
    images = {name: _image(Path(f)) for name, f in files.items() if f}
    refs = tuple(img for img in images.values() if img is not None)
    layout = images.get(tagged(entry, ("<layout>",)))
    target = _image(folder / f"{row_id}.gt.png")
    subjects, why = None, NO_DATA
    if metas is not None:
        frame = target.size if target is not None else None
        sheet = images.get(tagged(entry, SHEET_TOKENS))
        subjects, why = row_subjects(entry, metas.get(row_id), layout, sheet, frame)
    row = EvalRow(row_id, family_of(row_id), output, target, entry.get("prompt", ""), refs, layout, subjects)
    return row, why


@dataclass
class Report:
    """Metric values per row, and their means per family and overall (None where a metric does not apply)."""

    folder: str
    metrics: list[dict]  # name, label, model, mirrors, higher, protocol
    rows: dict[str, dict[str, float | None]] = field(default_factory=dict)  # row_id -> metric -> value
    families: dict[str, str] = field(default_factory=dict)  # row_id -> family
    skipped: list[str] = field(default_factory=list)  # one line per metric that could not be set up
    unscored: dict[str, str] = field(default_factory=dict)  # row_id -> why it was not scored
    resized: dict[str, str] = field(default_factory=dict)  # row_id -> "WxH -> WxH": output resized to its truth
    no_truth: list[str] = field(default_factory=list)  # rows scored without a ground truth (<row>.gt.png absent)
    no_subjects: dict[str, str] = field(default_factory=dict)  # with a per-subject metric: row_id -> why it has none
    per_subject: dict[str, dict[str, SubjectValues]] = field(default_factory=dict)  # row_id -> metric -> values

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
            "unscored": self.unscored,
            "resized_to_truth": self.resized,
            "no_ground_truth": self.no_truth,
            "no_subjects": self.no_subjects,
            "per_subject": self.per_subject,
        }


def evaluate(
    folder: str | Path,
    metrics: list[Metric],
    skipped: list[str] | None = None,
    data: str | None = None,
    cache_dir: str | None = None,
) -> Report:
    """Score every row of a batch folder; InputError when no metric gives a value for any row. ``data``: the source
    the folder was made from (``sigma batch``'s), read for the SIGMA-GEN subjects of the per-subject metrics."""
    per_subject = any(m.score_subjects is not None for m in metrics)
    loaded = load_rows(folder, data if per_subject else None, cache_dir)
    rows = loaded.rows
    report = Report(str(Path(folder).resolve()), [_describe(m) for m in metrics], skipped=list(skipped or []))
    report.unscored, report.resized, report.no_truth = loaded.unscored, loaded.resized, loaded.no_truth
    if per_subject:
        report.no_subjects = loaded.no_subjects
    report.families = {r.row_id: r.family for r in rows}
    report.rows = {r.row_id: {} for r in rows}
    for metric in metrics:
        values, per = metric.compute_all(rows)
        for row, value, subjects in zip(rows, values, per, strict=True):
            ok = value is not None and math.isfinite(float(value))
            report.rows[row.row_id][metric.name] = float(value) if ok else None
            if subjects is not None:
                report.per_subject.setdefault(row.row_id, {})[metric.name] = subjects
    if not any(v is not None for values in report.rows.values() for v in values.values()):
        raise InputError(f"nothing in {folder} can be scored: {_why_nothing(rows, loaded.unscored, metrics)}")
    return report


NEEDS = {  # what a metric's ``needs`` asks of a row, as a test and in words
    "target": (lambda r: r.target is not None, "a ground truth (<row>.gt.png)"),
    "layout": (lambda r: r.layout is not None, "a layout control"),
    "target or references": (lambda r: r.target is not None or bool(r.references), "a ground truth or references"),
    "subjects": (lambda r: r.subjects is not None, "SIGMA-GEN subjects (a row whose meta names them)"),
}
RESTORE = "run `sigma batch` into this folder again to restore what is missing"
FIXES = {"subjects": "give --data, the source this folder was made from, if it holds SIGMA-GEN rows"}


def _why_nothing(rows: list[EvalRow], unscored: dict[str, str], metrics: list[Metric]) -> str:
    """Why no value came out, in one line, with the fix."""
    if not rows:
        row_id, reason = next(iter(unscored.items()))
        return (
            f"none of its {len(unscored)} outputs can be scored (first: {row_id}: {reason}); run `sigma batch` on "
            "the same source into this folder again: it generates them anew"
        )
    wants: dict[str, list[str]] = {}  # what is lacking -> the metrics that need it
    fixes: list[str] = []
    for m in metrics:
        have, what = NEEDS.get(m.needs, (None, ""))
        if have is not None and not any(have(r) for r in rows):
            wants.setdefault(what, []).append(m.name)
            fixes += [f for f in [FIXES.get(m.needs, RESTORE)] if f not in fixes]
    needs = "; ".join(f"{', '.join(names)} need {what}" for what, names in wants.items())
    lacking = f"{needs}, and none of its {len(rows)} rows has one" if wants else "no metric gave a value"
    return f"{lacking}: {'; '.join(fixes or [RESTORE])}, or choose other --metrics"


def _describe(m: Metric) -> dict:
    return {"name": m.name, "label": m.label, "model": m.model, "mirrors": m.mirrors, "higher": m.higher_is_better,
            "protocol": m.protocol}  # fmt: skip


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
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        families = {row_id: family_of(row_id) for row_id in data["rows"]}
        report = Report(data["folder"], data["metrics"], data["rows"], families, data.get("skipped", []))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not a report of this version: {type(exc).__name__}"
        raise InputError(f"{path} is unreadable ({reason}): delete it to score that run again") from None
    report.unscored, report.resized = data.get("unscored", {}), data.get("resized_to_truth", {})
    report.no_truth = data.get("no_ground_truth", [])
    report.no_subjects, report.per_subject = data.get("no_subjects", {}), data.get("per_subject", {})
    return report
