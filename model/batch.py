"""Batch inference over SIGMA-format rows: resumable, a bad row is logged and counted, a summary at the end.

For each row the references are laid out by the training rules (placeholders in order, the target's mentions
removed) and the output takes the ground-truth image's size; the output is ``<out>/<row_id>.png`` and the ground
truth ``<out>/<row_id>.gt.png``. Rows whose output exists are skipped, so an interrupted run continues.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import GenerationConfig
from .dataset import BadRow, SigmaRow
from .errors import InputError, SigmaError
from .images import resize_size, save_png
from .pipeline import SigmaPipeline
from .prompt import ImagePart, InterleavedPrompt, parse_training_instruction

log = logging.getLogger(__name__)


@dataclass
class BatchSummary:
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
    """Generate one image per row. ``on_row(row_id, status)`` reports generated / skipped / failed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = BatchSummary()
    start = time.perf_counter()
    with open(out / "failures.jsonl", "a") as failures:
        for row in rows:
            if limit is not None and summary.rows >= limit:
                break
            summary.rows += 1
            status = _one(pipe, row, out, config, summary, failures)
            if on_row is not None:
                on_row(row.row_id, status)
    summary.seconds = time.perf_counter() - start
    (out / "summary.json").write_text(json.dumps(asdict(summary), indent=1))
    return summary


def _one(pipe, row, out: Path, config: GenerationConfig, summary: BatchSummary, failures) -> str:
    target = out / f"{row.row_id}.png"
    if isinstance(row, SigmaRow) and target.exists():
        summary.skipped_existing += 1
        return "skipped"
    try:
        if isinstance(row, BadRow):
            raise InputError(row.reason)
        images = row.decode_images()
        prompt = row_prompt(row, len(images))
        gt = images[-1]
        w, h = resize_size(gt.width, gt.height, pipe.arch.vae_transform)
        result = pipe(prompt, images[:-1], config=config.replace(size=(h, w)))
        save_png(gt, out / f"{row.row_id}.gt.png")
        meta = {"sigma:instruction": row.instruction, "sigma:seed": str(result.seed)}
        save_png(result.image, target, meta)
    except SigmaError as exc:
        summary.failed += 1
        record = {"row_id": row.row_id, "error": str(exc)}
        summary.failures.append(record)
        failures.write(json.dumps(record) + "\n")
        failures.flush()
        log.warning("row %s skipped: %s", row.row_id, exc)
        return "failed"
    summary.generated += 1
    return "generated"
