"""Batch inference over SIGMA-format rows: resumable, a bad row is logged and counted, a summary at the end.

For each row the references are laid out by the training rules (placeholders in order, the target's mentions
removed) and the output takes the ground-truth image's size (or the size asked for); the output is
``<out>/<row_id>.png``, carrying the same record as ``sigma generate`` writes plus the row it came from, and the
ground truth ``<out>/<row_id>.gt.png``; ``records.jsonl`` lists every output's record. Rows whose output exists are
skipped, so an interrupted run continues.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .config import GenerationConfig
from .dataset import BadRow, SigmaRow
from .errors import InputError, SigmaError
from .files import atomic_write, check_output_dir, write_json
from .images import resize_size, save_png
from .pipeline import SigmaPipeline
from .prompt import ImagePart, InterleavedPrompt, parse_training_instruction
from .request import build_request

log = logging.getLogger(__name__)


FAILURES = "failures.jsonl"  # one {"row_id", "error"} line per row that failed in its latest attempt
SUMMARY = "summary.json"
REFERENCES = "references"  # each row's reference images, as the records name them
SETTINGS = "settings.json"  # what the folder was made with: a rerun must use the same
RECORDS = "records.jsonl"  # one line per output: its row id, file name and generation record (as --json prints)


@dataclass
class BatchSummary:
    """What one call of :func:`run_batch` did (``summary.json`` adds the totals of the whole output folder)."""

    rows: int = 0
    generated: int = 0
    skipped_existing: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[dict] = field(default_factory=list)


def row_prompt(row: SigmaRow, n_images: int) -> InterleavedPrompt:
    """The references of a row as an interleaved prompt (the target and its mentions removed)."""
    parsed = parse_training_instruction(row.instruction, n_images)
    target = n_images - 1
    parts = tuple(p for p in parsed.parts if not (isinstance(p, ImagePart) and p.index == target))
    if not parts:
        raise InputError("the row has neither text nor references")
    return InterleavedPrompt(parts)


def run_batch(
    pipe: SigmaPipeline,
    rows: Iterable[SigmaRow | BadRow],
    out_dir: str | Path,
    config: GenerationConfig,
    *,
    limit: int | None = None,
    on_row: Callable[[str, str], None] | None = None,
) -> BatchSummary:
    """Generate one image per row. ``on_row(row_id, status)`` reports generated / skipped / failed.

    Nothing is created until the first row has been read, so a bad source or ``out_dir`` leaves no folder behind.
    ``failures.jsonl`` keeps one entry per failing row (its latest error) across reruns, and ``summary.json``
    counts the whole folder, with this run's figures under ``this_run``; both are rewritten atomically.
    """
    out = check_output_dir(out_dir)
    settings = {"config": asdict(config), "model": pipe.source}
    _check_settings(out, settings)
    rows = iter(rows)
    first = next(rows, None)  # reading the first row checks the source before anything is created
    out.mkdir(parents=True, exist_ok=True)
    if not (out / SETTINGS).is_file():
        write_json(out / SETTINGS, settings)
    failures = read_failures(out / FAILURES)
    summary = BatchSummary()
    start = time.perf_counter()
    try:
        with open(out / RECORDS, "a") as records:
            for row in itertools.chain([first] if first is not None else [], rows):
                if limit is not None and summary.rows >= limit:
                    break
                summary.rows += 1
                status = _one(pipe, row, out, config, summary, failures, records)
                if on_row is not None:
                    on_row(row.row_id, status)
    finally:
        summary.seconds = time.perf_counter() - start
        _write_failures(out / FAILURES, failures)
        _tidy_records(out)
        write_json(out / SUMMARY, _folder_summary(out, failures, summary))
    return summary


def _tidy_records(out: Path) -> None:
    """One line per output that exists (the latest), rewritten atomically: reruns never repeat a row."""
    latest: dict[str, str] = {}
    for line in (out / RECORDS).read_text().splitlines() if (out / RECORDS).is_file() else []:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash
            continue
        if (out / str(entry.get("output", ""))).is_file():
            latest[str(entry.get("row_id"))] = line
    atomic_write(out / RECORDS, lambda f: f.write("".join(v + "\n" for v in latest.values()).encode()))


def _check_settings(out: Path, settings: dict) -> None:
    """A folder holds the outputs of one set of settings: resuming it with others would mix them silently."""
    path = out / SETTINGS
    if not path.is_file():
        return
    try:
        before = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise InputError(f"{path} is unreadable: remove it, or choose another --out") from None
    now = json.loads(json.dumps(settings))  # tuples as lists, as stored
    changed = [k for k in now["config"] if before.get("config", {}).get(k) != now["config"][k]]
    if before.get("model") != now["model"]:
        changed.insert(0, "model")
    if changed:
        raise InputError(
            f"--out {out} was made with other settings ({', '.join(changed)} differ): resume it with the same "
            "settings, or choose another --out"
        )


def read_failures(path: Path) -> dict[str, str]:
    """Row id -> latest error of a ``failures.jsonl`` (empty when there is none; unreadable lines are skipped)."""
    failures: dict[str, str] = {}
    if not path.is_file():
        return failures
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            failures[str(record["row_id"])] = str(record["error"])
        except (json.JSONDecodeError, KeyError, TypeError):
            log.warning("%s: skipping an unreadable line", path)
    return failures


def _write_failures(path: Path, failures: dict[str, str]) -> None:
    lines = "".join(json.dumps({"row_id": row_id, "error": error}) + "\n" for row_id, error in failures.items())
    atomic_write(path, lambda f: f.write(lines.encode()))


def _folder_summary(out: Path, failures: dict[str, str], run: BatchSummary) -> dict:
    """Totals over the whole output folder (every run so far), plus this run's figures."""
    outputs = [p for p in out.glob("*.png") if not p.name.endswith(".gt.png")]
    return {
        "generated": len(outputs),
        "failed": len(failures),
        "failures": [{"row_id": row_id, "error": error} for row_id, error in failures.items()],
        "this_run": {k: v for k, v in asdict(run).items() if k != "failures"},
    }


def _one(pipe, row, out: Path, config: GenerationConfig, summary: BatchSummary, failures: dict[str, str], records):
    target = out / f"{row.row_id}.png"
    if isinstance(row, SigmaRow) and target.exists():
        summary.skipped_existing += 1
        _forget(failures, row.row_id, out)
        return "skipped"
    try:
        if isinstance(row, BadRow):
            raise InputError(row.reason)
        images = row.decode_images()
        prompt = row_prompt(row, len(images))
        gt = images[-1]
        w, h = resize_size(gt.width, gt.height, pipe.arch.vae_transform)
        # the references become files beside the outputs, so every output replays with `sigma generate --from`
        refs = [save_png(img, out / REFERENCES / f"{row.row_id}.ref{k}.png") for k, img in enumerate(images[:-1], 1)]
        request = build_request(prompt, refs, arch=pipe.arch, config=config.replace(size=config.size or (h, w)))
        result = pipe(request)
        record = replace(result.record, source={"row_id": row.row_id, "instruction": row.instruction})
        save_png(gt, out / f"{row.row_id}.gt.png")
        save_png(result.image, target, record.png_info())
        records.write(json.dumps({"row_id": row.row_id, "output": target.name, **record.to_json()}) + "\n")
        records.flush()
    except SigmaError as exc:
        summary.failed += 1
        summary.failures.append({"row_id": row.row_id, "error": str(exc)})
        failures[row.row_id] = str(exc)
        _write_failures(out / FAILURES, failures)
        log.warning("row %s skipped: %s", row.row_id, exc)
        return "failed"
    summary.generated += 1
    _forget(failures, row.row_id, out)
    return "generated"


def _forget(failures: dict[str, str], row_id: str, out: Path) -> None:
    """A row that now has its output leaves the failure list."""
    if failures.pop(row_id, None) is not None:
        _write_failures(out / FAILURES, failures)
