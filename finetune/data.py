"""SIGMA rows -> typed training samples laid out by the training rules (:func:`model.run.sequence.trained_blocks`).

Every random decision (condition dropout, the target's timestep) comes from a ``torch.Generator`` the caller
passes, so a sample is a pure function of (row, config, generator state).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch

from sigma_studio.model.config import ArchConfig
from sigma_studio.model.data.dataset import BadRow, RowGroup, SigmaRow, read_group
from sigma_studio.model.errors import InputError
from sigma_studio.model.images import patchify, resize, to_tensor
from sigma_studio.model.request.prompt import ImagePart, TextPart, parse_training_instruction
from sigma_studio.model.request.tokens import Tokenizer
from sigma_studio.model.run.sequence import ContextPlan, ImageGeometry, trained_blocks
from sigma_studio.model.shapes.labels import TARGET_SETS, row_labels


@dataclass(frozen=True)
class DropConfig:
    """Condition dropout probabilities (SIGMA's fine-tune: text 0.1, VAE 0.3, ViT 0.3)."""

    text: float = 0.1
    vae: float = 0.3
    vit: float = 0.3


@dataclass
class TrainSample:
    row_id: str
    plan: ContextPlan
    vae_images: dict[int, torch.Tensor]  # part -> [3, H, W] in [-1, 1] (references and target)
    vit_patches: dict[int, torch.Tensor]  # part -> [m, 3*14*14] (ViT slots; ignored without a ViT)
    raw_timestep: float
    text_loss: bool = False
    family: str = ""
    labels: dict = field(default_factory=dict)  # image index -> label set -> per-token classes (--label-weight)
    num_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.num_tokens = self.plan.length


def epoch_rows(
    units: list[RowGroup], seed: int, epoch: int, window: int, start: int = 0
) -> Iterator[tuple[int, SigmaRow | BadRow]]:
    """One epoch of rows in a seeded order, each with its place in that order; rows before ``start`` are skipped
    without being read (a resumed run lands exactly where it stopped).

    The order is a two-level shuffle, as streaming loaders do it: the epoch's row groups are permuted (seeded by
    ``seed`` and ``epoch``), cut into windows of at least ``window`` rows, and each window's rows are permuted in
    turn. A dataset written one task family per file is then mixed within every step instead of being trained one
    family after another (the shapes world's five families used to follow each other in blocks of hundreds of
    steps). A window holds its rows' encoded bytes in memory. ``window=0`` reads the files in order, unshuffled.
    """
    if window <= 0:  # in file order, one row group at a time
        windows = [[unit] for unit in units]
    else:
        order = list(units)
        random.Random(f"groups-{seed}-{epoch}").shuffle(order)
        windows, current, size = [], [], 0
        for unit in order:
            current.append(unit)
            size += unit.size
            if size >= window:
                windows.append(current)
                current, size = [], 0
        windows += [current] if current else []
    place = 0
    for k, part in enumerate(windows):
        size = sum(u.size for u in part)
        if place + size <= start:  # wholly before the resume point: not read at all
            place += size
            continue
        rows = [row for unit in part for row in read_group(unit)]
        if window > 0:
            random.Random(f"rows-{seed}-{epoch}-{k}").shuffle(rows)
        for offset, row in enumerate(rows):
            if place + offset >= start:
                yield place + offset, row
        place += size


def family_of(row_id: str) -> str:
    """Task family of a row: its shard name without the trailing number (``edit-00003`` -> ``edit``)."""
    stem = row_id.rsplit("-", 1)[0]
    return stem.rstrip("0123456789_-") or stem


def check_family_weights(
    weights: dict[str, float], files: list[tuple[object, str]], option: str = "--family-weight"
) -> None:
    """Refuse a per-family ``option`` whose family no file of the dataset holds (it would silently change nothing).

    Args:
        weights: family -> value, from ``--family-weight FAMILY=WEIGHT`` (or ``option``'s FAMILY=VALUE).
        files: the dataset's (file, row-id prefix) pairs (:func:`model.data.dataset.parquet_files`); a row's family is
            its file's prefix without the trailing number, as :func:`family_of` reads it from the row id.
    """
    known = sorted({family_of(f"{prefix}-000000") for _, prefix in files})
    unknown = sorted(set(weights) - set(known))
    if unknown:
        raise InputError(
            f"{option} {', '.join(unknown)}: no such task family in this dataset; its families are {', '.join(known)}"
        )


def shifted_raw(raw: float, shift: float, trained: float) -> float:
    """The raw (logit-normal) time that, read at the batch's timestep shift ``trained``, gives the noise level ``raw``
    gives at ``shift``: a row's own shift inside a batch packed at another (``--family-shift``). A shift k multiplies
    the odds t / (1 - t) of :func:`model.run.packed.flow_time` by k, so it adds log k to the raw time (logit u)."""
    return raw + math.log(shift / trained)


def check_family_options(weights: dict[str, float], shifts: dict[str, float], files: list[tuple[object, str]]) -> None:
    """``--family-weight`` and ``--family-shift``, each checked by :func:`check_family_weights`."""
    check_family_weights(weights, files)
    check_family_weights(shifts, files, "--family-shift")


def is_held_out(row_id: str, fraction: float) -> bool:
    """Deterministic split by a hash of the row id: about ``fraction`` of every family is held out."""
    h = int.from_bytes(hashlib.blake2b(row_id.encode(), digest_size=8).digest(), "big")
    return (h % 10_000) < fraction * 10_000


def build_sample(
    row: SigmaRow,
    arch: ArchConfig,
    tokenizer: Tokenizer,
    generator: torch.Generator,
    drop: DropConfig = DropConfig(),
    raw_timestep: float | None = None,
    text_loss: bool = False,
    labels: tuple[str, ...] = (),
) -> TrainSample:
    """Decode and lay out one row; ``labels``: with the per-token labels of these label sets where its ``meta``
    gives them (:mod:`model.shapes.labels`). Raises InputError for a row that cannot be used."""
    images = row.decode_images()
    parsed = parse_training_instruction(row.instruction, len(images))
    vae_spec, vit_spec = arch.vae_transform, arch.vit_slot_transform
    geometry, vae_imgs, vit_imgs = [], [], []
    s = arch.pixels_per_token
    for img in images:
        v = resize(img, vae_spec)  # references and the target ("generate" transform, same parameters)
        t = resize(img, vit_spec)  # ViT slots: the training ViT transform of the ORIGINAL image
        vae_imgs.append(v)
        vit_imgs.append(t)
        geometry.append(
            ImageGeometry((v.height // s, v.width // s), (t.height // vit_spec.stride, t.width // vit_spec.stride))
        )
    dropped = _dropout(parsed.parts, parsed.target_index, generator, drop)
    plan = trained_blocks(
        parsed.parts, geometry, tokenizer.segment, tokenizer.ids,
        target=parsed.target_index, slot_is_zero=arch.vit is None, dropped=dropped,
    )  # fmt: skip
    if not any(b.kind == "noise" for b in plan.blocks):
        raise InputError("the row has no target block")
    tau = float(torch.randn((), generator=generator)) if raw_timestep is None else raw_timestep
    vae_tensors = {b.part: to_tensor(vae_imgs[b.image]) for b in plan.blocks if b.kind in ("vae", "noise")}
    vit_tensors = {
        b.part: patchify(to_tensor(vit_imgs[b.image]), vit_spec.stride) for b in plan.blocks if b.kind == "vit"
    }
    family = family_of(row.row_id)
    found = {}
    if dropped:  # what to draw may be in the dropped condition: the target's label only when every one is kept
        labels = tuple(name for name in labels if name not in TARGET_SETS)
    if labels and row.meta:
        pictures = {k: (g.latent_hw, images[k].width) for k, g in enumerate(geometry)}
        found = {
            k: {name: torch.from_numpy(v) for name, v in sets.items()}
            for k, sets in row_labels(family, row.meta, pictures, labels).items()
        }
    return TrainSample(row.row_id, plan, vae_tensors, vit_tensors, tau, text_loss, family, found)


def row_samples(
    row: SigmaRow,
    arch: ArchConfig,
    tokenizer: Tokenizer,
    generator: torch.Generator,
    drop: DropConfig,
    weight: float = 1.0,
    shift: float | None = None,
    text_loss: bool = False,
    labels: tuple[str, ...] = (),
) -> list[TrainSample]:
    """One row's training samples: ``weight`` (``--family-weight``) times, its fraction by chance; with ``shift``
    (``--family-shift``), each at that timestep shift, packed among rows at ``arch.train_timestep_shift``. Raises
    InputError for a row that cannot be used, as :func:`build_sample` does."""
    repeats = int(weight) + (1 if float(torch.rand((), generator=generator)) < weight - int(weight) else 0)
    built = [build_sample(row, arch, tokenizer, generator, drop, text_loss=text_loss, labels=labels)
             for _ in range(repeats)]  # fmt: skip
    if shift is None:
        return built
    return [replace(b, raw_timestep=shifted_raw(b.raw_timestep, shift, arch.train_timestep_shift)) for b in built]


def _dropout(parts, target: int, generator: torch.Generator, drop: DropConfig) -> frozenset[tuple[int, str]]:
    """Independent Bernoulli draws per droppable item, in part order (text; VAE then ViT per reference). A plan is
    no condition but what the model writes, so it is never dropped (and draws nothing)."""
    out = set()
    target_image = parts[target].index
    for i, p in enumerate(parts):
        if isinstance(p, TextPart) and not p.plan:
            if drop.text and float(torch.rand((), generator=generator)) < drop.text:
                out.add((i, "text"))
        elif isinstance(p, ImagePart) and p.index != target_image:
            if drop.vae and float(torch.rand((), generator=generator)) < drop.vae:
                out.add((i, "vae"))
            if drop.vit and float(torch.rand((), generator=generator)) < drop.vit:
                out.add((i, "vit"))
    return frozenset(out)


@dataclass
class DataStats:
    rows: int = 0
    used: int = 0
    bad: int = 0
    held_out: int = 0
    too_long: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def copy(self) -> DataStats:
        return replace(self, reasons=dict(self.reasons))

    def skipped(self, max_tokens: int) -> str:
        """What was skipped, in words, with the most frequent reason (e.g. a column of the wrong type)."""
        text = f"{self.bad} bad rows, {self.too_long} over --max-tokens {max_tokens}"
        if self.reasons:
            reason, count = max(self.reasons.items(), key=lambda kv: kv[1])
            text += f"; most often ({count}x): {reason}"
        return text

    def skip(self, reason: str) -> None:
        self.bad += 1
        key = reason.split("(")[0].strip()[:120]
        self.reasons[key] = self.reasons.get(key, 0) + 1


def samples(
    rows: Iterator[SigmaRow | BadRow],
    arch: ArchConfig,
    tokenizer: Tokenizer,
    generator: torch.Generator,
    stats: DataStats,
    *,
    drop: DropConfig = DropConfig(),
    max_tokens_per_sample: int = 30_000,
    held_out: float = 0.0,
    want_held_out: bool = False,
    text_loss: bool = False,
) -> Iterator[TrainSample]:
    """Usable samples; a bad row is skipped and counted in ``stats``, never fatal."""
    for row in rows:
        stats.rows += 1
        if held_out and is_held_out(row.row_id, held_out) != want_held_out:
            stats.held_out += 1
            continue
        if isinstance(row, BadRow):
            stats.skip(row.reason)
            continue
        try:
            sample = build_sample(row, arch, tokenizer, generator, drop, text_loss=text_loss)
        except InputError as exc:
            stats.skip(str(exc))
            continue
        if sample.num_tokens > max_tokens_per_sample:
            stats.too_long += 1
            continue
        stats.used += 1
        yield sample
