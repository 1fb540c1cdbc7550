"""Batch inference over SIGMA-format rows: resumable, shardable, a bad row is logged and counted, a summary.

For each row the references are laid out by the training rules (placeholders in order, the target's mentions
removed) and the output takes the ground-truth image's size (or the size asked for). The output is
``<out>/<row_id>.png``, carrying the same record as ``sigma generate`` writes plus the row it came from, beside the
ground truth ``<out>/<row_id>.gt.png`` and the references under ``references/``. Rows whose output exists, decodes
in full and carries the row's own record are skipped, so an interrupted run continues; a truncated, foreign or
resized output is generated again. A row whose instruction places an image it does not have fails.

Several processes share one folder by :class:`Shard`: under ``torchrun`` each rank takes its share of the rows,
``--shard I/N`` does the same for job arrays. Each shard writes its own ``failures*.jsonl`` and
``records*.jsonl``; ``summary.json`` always counts the whole folder.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO

from PIL import Image

from ..config import GenerationConfig
from ..errors import InputError, SigmaError
from ..files import atomic_write, check_output_dir, write_json
from ..images import MAX_INPUT_PIXELS, resize_size, save_png, to_rgb
from ..request.build import build_request
from ..request.prompt import PLACEHOLDER_RE, ImagePart, InterleavedPrompt, TextPart, parse_training_instruction
from ..request.record import RECORD_KEY, GenerationRecord
from ..run.pipeline import SigmaPipeline
from .dataset import BadRow, SigmaRow

log = logging.getLogger(__name__)

SUMMARY = "summary.json"
REFERENCES = "references"  # each row's reference images, as the records name them
SETTINGS = "settings.json"  # what the folder was made with: a rerun must use the same


@dataclass
class BatchSummary:
    """What one call of :func:`run_batch` did (``summary.json`` adds the totals of the whole output folder)."""

    rows: int = 0
    generated: int = 0
    skipped_existing: int = 0
    failed: int = 0
    redone: int = 0  # outputs found broken (truncated, another row's, resized) and generated again (or failed)
    seconds: float = 0.0
    failures: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Shard:
    """Which rows this process does: row ``r`` belongs to shard ``crc32(r.row_id) % count``. The rule holds across
    reruns and row orders, so any shard resumes on its own and every row is done by exactly one shard."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise InputError(f"--shard {self.index}/{self.count}: write I/N with 0 <= I < N, e.g. 0/4")

    @classmethod
    def parse(cls, text: str) -> Shard:
        index, sep, count = text.partition("/")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit():
            raise InputError(f"--shard '{text}' is not I/N (this job's 0-based index, and the number of jobs)")
        return cls(int(index), int(count))

    @classmethod
    def from_env(cls) -> Shard:
        """The torchrun rank and world size (``RANK``, ``WORLD_SIZE``); one shard outside torchrun."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))

    def owns(self, row_id: str) -> bool:
        return self.count == 1 or zlib.crc32(row_id.encode()) % self.count == self.index

    def file(self, stem: str) -> str:
        """This shard's own ``.jsonl`` file in the shared folder: no two processes write one file."""
        return f"{stem}{'' if self.count == 1 else f'.{self.index}of{self.count}'}.jsonl"


def row_prompt(row: SigmaRow, n_images: int) -> InterleavedPrompt:
    """The references of a row as an interleaved prompt (the target and its mentions removed)."""
    parsed = parse_training_instruction(row.instruction, n_images)
    target = n_images - 1
    parts = tuple(p for p in parsed.parts if not (isinstance(p, ImagePart) and p.index == target))
    if not parts:
        raise InputError("the row has neither text nor references")
    return InterleavedPrompt(parts)


def check_placeholders(row: SigmaRow, n_images: int) -> None:
    """Refuse a row whose instruction places an image it does not have: generating it without that image would
    answer another question than the row asks. SIGMA data writes ``<image_N>``, N from 1 to the number of images."""
    parsed = parse_training_instruction(row.instruction, n_images)
    if parsed.skipped_placeholders:
        k = parsed.skipped_placeholders[0]
        raise InputError(
            f"the instruction places image {k}, but the row has {n_images} image(s) (the last is the target): "
            f"use <image_N> with N from 1 to {n_images}, or add the missing image to image_list"
        )
    texts = (p.text for p in parsed.parts if isinstance(p, TextPart))
    stray = [m.group(0) for text in texts for m in PLACEHOLDER_RE.finditer(text)]
    if stray:
        raise InputError(
            f"the instruction's {stray[0]} is not a placeholder of SIGMA data, so no image would take its place: "
            f"write <image_N> with N from 1 to {n_images}"
        )


def check_limit(limit: int | None) -> None:
    """``--limit`` counts rows of the source: 1 or more, or None for every row."""
    if limit is not None and limit < 1:
        raise InputError(f"--limit {limit} is out of range: give 1 or more rows, or leave it out to do every row")


def read_png(path: Path) -> tuple[Image.Image, dict]:
    """A PNG checked in full (chunk checksums, then a complete decode): (RGB image, its text chunks); raises
    InputError naming the file when it is missing, cut off or not an image."""
    if not path.is_file():
        raise InputError(f"{path.name} is missing")
    try:
        with Image.open(path) as img:
            img.verify()  # chunk checksums, up to the end marker
        with Image.open(path) as img:
            if img.width * img.height > MAX_INPUT_PIXELS:
                raise InputError(f"{path.name} is {img.width}x{img.height}, too large to decode safely")
            img.load()  # a full decode: a cut-off image fails here
            return to_rgb(img), dict(img.info)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many error types for a broken file
        raise InputError(f"{path.name} is not a complete PNG ({type(exc).__name__}: {exc})") from None


def output_problem(
    path: Path, row_id: str, instruction: str | None = None, entry: dict | None = None
) -> tuple[Image.Image | None, str | None]:
    """(the output in RGB, None) when ``path`` is a complete PNG carrying the record of row ``row_id`` at the size
    that record names (and of ``instruction``, and the same prompt and references as the ``records.jsonl``
    ``entry``, when given); else (the image or None, what is wrong in one line)."""
    name = path.name
    try:
        image, info = read_png(path)
    except InputError as exc:
        return None, str(exc)
    try:
        record = GenerationRecord.from_json(json.loads(info[RECORD_KEY]))
    except (KeyError, ValueError, TypeError):
        return image, f"{name} carries no readable SIGMA Studio record"
    source = record.source or {}
    if source.get("row_id") != row_id:
        return image, f"{name} carries the record of row {source.get('row_id')!r}, not of row {row_id!r}"
    if instruction is not None and source.get("instruction") != instruction:
        return image, f"{name} carries another instruction than row {row_id!r} has now"
    refs = lambda images: [(i.get("name"), i.get("sha256")) for i in images or ()]  # noqa: E731
    if entry is not None and (record.prompt, refs(record.images)) != (entry.get("prompt"), refs(entry.get("images"))):
        return image, f"{name} carries another prompt or other references than its line in records.jsonl"
    h, w = (list(record.config.get("size") or []) + [None, None])[:2]
    if (w, h) != image.size:
        return image, f"{name} is {image.width}x{image.height}, but its record says it was generated at {w}x{h}"
    return image, None


def run_batch(
    pipe: SigmaPipeline,
    rows: Iterable[SigmaRow | BadRow],
    out_dir: str | Path,
    config: GenerationConfig,
    *,
    limit: int | None = None,
    on_row: Callable[[str, str], None] | None = None,
    shard: Shard = Shard(),
) -> BatchSummary:
    """Generate one image per row of this shard. ``on_row(row_id, status)`` reports generated / skipped / failed.

    ``limit`` counts rows of the whole source, so it names the same rows however the work is sharded. Nothing is
    created until the first row has been read: a bad source or ``out_dir`` leaves no folder behind. This shard's
    failures and records keep one entry per row across reruns, rewritten atomically.
    """
    check_limit(limit)
    out = check_output_dir(out_dir)
    settings = {"config": asdict(config), "model": pipe.source}
    _check_settings(out, settings)
    rows = iter(rows)
    first = next(rows, None)  # reading the first row checks the source before anything is created
    out.mkdir(parents=True, exist_ok=True)
    if not (out / SETTINGS).is_file():
        write_json(out / SETTINGS, settings)
    run = _Run(pipe, out, config, shard, read_failures(out / shard.file("failures")))
    start = time.perf_counter()
    try:
        with open(out / shard.file("records"), "a") as run.records:
            for index, row in enumerate(itertools.chain([first] if first is not None else [], rows)):
                if limit is not None and index >= limit:
                    break
                if shard.owns(row.row_id):
                    run.summary.rows += 1
                    status = run.one(row)
                    if on_row is not None:
                        on_row(row.row_id, status)
    finally:
        run.summary.seconds = time.perf_counter() - start
        run.write_failures()
        _tidy_records(out / shard.file("records"), out)
        write_summary(out, run.summary)
    return run.summary


@dataclass
class _Run:
    pipe: SigmaPipeline
    out: Path
    config: GenerationConfig
    shard: Shard
    failures: dict[str, str]
    summary: BatchSummary = field(default_factory=BatchSummary)
    records: IO[str] | None = None

    def one(self, row: SigmaRow | BadRow) -> str:
        target = self.out / f"{row.row_id}.png"
        if isinstance(row, SigmaRow) and target.exists():
            problem = self.problem(row, target)
            if problem is None:
                self.summary.skipped_existing += 1
                self.forget(row.row_id)
                return "skipped"
            log.warning("row %s: %s; generating it again", row.row_id, problem)
            self.summary.redone += 1
            target.unlink()
        try:
            self.generate(row, target)
        except SigmaError as exc:
            self.summary.failed += 1
            self.summary.failures.append({"row_id": row.row_id, "error": str(exc)})
            self.failures[row.row_id] = str(exc)
            self.write_failures()
            log.warning("row %s failed: %s", row.row_id, exc)
            return "failed"
        self.summary.generated += 1
        self.forget(row.row_id)
        return "generated"

    def problem(self, row: SigmaRow, target: Path) -> str | None:
        """Why an existing output cannot count as done (None: it can): see :func:`output_problem`."""
        _, problem = output_problem(target, row.row_id, row.instruction)
        if problem is None:
            try:
                read_png(self.out / f"{row.row_id}.gt.png")
            except InputError as exc:
                problem = f"its ground truth {exc}"
        return problem

    def generate(self, row: SigmaRow | BadRow, target: Path) -> None:
        if isinstance(row, BadRow):
            raise InputError(row.reason)
        images = row.decode_images()
        check_placeholders(row, len(images))
        prompt = row_prompt(row, len(images))
        gt = images[-1]
        w, h = resize_size(gt.width, gt.height, self.pipe.arch.vae_transform)
        # the references become files beside the outputs, so every output replays with `sigma generate --from`
        out = self.out
        refs = [save_png(img, out / REFERENCES / f"{row.row_id}.ref{k}.png") for k, img in enumerate(images[:-1], 1)]
        config = self.config.replace(size=self.config.size or (h, w))
        result = self.pipe(build_request(prompt, refs, arch=self.pipe.arch, config=config))
        record = replace(result.record, source={"row_id": row.row_id, "instruction": row.instruction})
        save_png(gt, out / f"{row.row_id}.gt.png")
        save_png(result.image, target, record.png_info())
        self.records.write(json.dumps({"row_id": row.row_id, "output": target.name, **record.to_json()}) + "\n")
        self.records.flush()

    def forget(self, row_id: str) -> None:
        """A row that now has its output leaves the failure list."""
        if self.failures.pop(row_id, None) is not None:
            self.write_failures()

    def write_failures(self) -> None:
        lines = "".join(json.dumps({"row_id": r, "error": e}) + "\n" for r, e in self.failures.items())
        atomic_write(self.out / self.shard.file("failures"), lambda f: f.write(lines.encode()))


def write_summary(out: Path, run: BatchSummary | None = None) -> dict:
    """``summary.json``: the totals of the whole folder (every shard, every run so far), plus one run's figures."""
    failures: dict[str, str] = {}
    for path in sorted(out.glob("failures*.jsonl")):
        failures |= read_failures(path)
    outputs = [p for p in out.glob("*.png") if not p.name.endswith(".gt.png")]
    summary = {
        "generated": len(outputs),
        "failed": len(failures),
        "failures": [{"row_id": row_id, "error": error} for row_id, error in failures.items()],
    }
    if run is not None:
        summary["this_run"] = {k: v for k, v in asdict(run).items() if k != "failures"}
    write_json(out / SUMMARY, summary)
    return summary


def read_records(out: str | Path) -> list[dict]:
    """Every output's record in a batch folder (all shards), in row order."""
    entries: dict[str, dict] = {}
    for path in sorted(Path(out).glob("records*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            entries[str(entry.get("row_id"))] = entry
    return [entries[k] for k in sorted(entries)]


def _tidy_records(path: Path, out: Path) -> None:
    """One line per output that exists (the latest), rewritten atomically: reruns never repeat a row."""
    latest: dict[str, str] = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash
            continue
        if (out / str(entry.get("output", ""))).is_file():
            latest[str(entry.get("row_id"))] = line
    atomic_write(path, lambda f: f.write("".join(v + "\n" for v in latest.values()).encode()))


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
    """Row id -> latest error of a ``failures*.jsonl`` (empty when there is none; unreadable lines are skipped)."""
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
