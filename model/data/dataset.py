"""SIGMA-format parquet rows: ``instruction_list`` (only [0][0] is used; a flat list<string> is read too) and
``image_list`` (encoded images, or Hugging Face ``datasets.Image`` structs; the last is the generation target,
the others are references), from local files or a Hugging Face dataset.

A row that cannot be read is yielded as a :class:`BadRow` with the reason, so a caller counts and skips it;
it never stops the iteration. The parquet shards of a Hugging Face dataset are downloaded (resumably, into the
Hugging Face cache) before the first row is read; offline, the cached shards are used.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..errors import InputError, MissingDependencyError
from ..files import atomic_write
from ..hub import HubOptions, is_repo_id, snapshot
from ..images import MAX_INPUT_PIXELS, to_rgb

PARQUET_MAGIC = b"PAR1"  # the first four bytes of every parquet file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SigmaRow:
    row_id: str  # "<shard stem>-<row index>", stable across runs (used for resuming)
    instruction: str
    images: tuple[bytes, ...]
    meta: str = ""  # the optional ``meta`` column (JSON: what a generated world's row shows), "" without one

    def decode_images(self) -> list[Image.Image]:
        """Decode every image (RGB, transparency on white); raises InputError naming the bad one's column entry."""
        return [_decode(data, f"image_list[{k}]") for k, data in enumerate(self.images)]

    def readable(self) -> bool:
        """Whether every image decodes."""
        try:
            self.decode_images()
        except InputError:
            return False
        return True


def _decode(data: bytes, name: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_INPUT_PIXELS:
                raise InputError(f"{name} is {img.width}x{img.height}, too large to decode safely")
            img.load()
            return to_rgb(img)
    except InputError:
        raise
    except Image.UnidentifiedImageError:  # its message names the in-memory buffer, not the image
        reason = f"unrecognised or truncated data: {len(data)} bytes starting {data[:8]!r}"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc)
    raise InputError(f"{name} cannot be decoded: not a readable image ({reason})")


@dataclass(frozen=True)
class BadRow:
    row_id: str
    reason: str


def _parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError("pyarrow", None, "Reading SIGMA parquet data") from None
    return pq


def parquet_files(source: str, opts: HubOptions | None = None) -> list[tuple[Path, str]]:
    """(file, row-id prefix) of the local parquet files under ``source`` (a file or a directory, sorted), or of
    the shards of a HF dataset. The prefix is the path relative to ``source``, so row ids stay unique.

    The source is checked (and a dataset's shards fetched) here, before any row is read: a missing source or an
    unreachable dataset raises a one-line error before a caller loads a model or creates its output folder.
    """
    opts = opts or HubOptions()
    path = Path(source).expanduser()
    if path.is_file():
        with path.open("rb") as f:
            if f.read(4) != PARQUET_MAGIC:
                raise InputError(f"{source} is not a parquet file (it does not begin as one); pass a .parquet file, a "
                                 "folder of them, or a Hugging Face dataset id")  # fmt: skip
        return [(path, path.stem)]
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise InputError(f"{source} holds no .parquet files; pass a parquet file or a folder of them")
        return [(f, str(f.relative_to(path).with_suffix("")).replace("/", "__")) for f in files]
    if not is_repo_id(source):
        raise InputError(f"{source} is neither a parquet file, a directory of them, nor a Hugging Face dataset id")
    return _hub_shards(source, opts)


def _hub_shards(repo: str, opts: HubOptions) -> list[tuple[Path, str]]:
    """The parquet shards of a Hugging Face dataset, downloaded (or found in the cache, offline)."""
    folder = snapshot(
        repo,
        ("*.parquet",),
        opts,
        "The parquet dataset",
        f"hf download {repo} --repo-type dataset",
        alternative="or pass a local folder of parquet files",
        repo_type="dataset",
    )
    files = sorted(folder.rglob("*.parquet"))
    if not files:
        raise InputError(f"The dataset {repo} has no .parquet files; pass a SIGMA-format parquet dataset")
    return [(f, str(f.relative_to(folder).with_suffix("")).replace("/", "__")) for f in files]


@dataclass(frozen=True)
class RowGroup:
    """One row group of one file, found from the file's metadata alone (nothing decoded): the unit in which rows
    are read, and which a shuffled epoch reorders. ``bad`` is set for a file that cannot be opened or whose columns
    have the wrong types: such a file is one unit that reads as ONE :class:`BadRow` named by its prefix."""

    path: Path
    prefix: str
    group: int
    first: int  # the index, within its file, of the group's first row
    size: int
    layout: SchemaLayout | None = None
    bad: str | None = None


def row_groups(files) -> list[RowGroup]:
    """The row groups of every file (a Path, or a (Path, row-id prefix) pair), in file order. A row's index comes
    from the row-group sizes in the file's metadata, so a group that fails to read does not shift the ids (and
    resume positions) of the rows after it."""
    pq = _parquet()
    units = []
    for item in files:
        path, prefix = item if isinstance(item, tuple) else (item, item.stem)
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many error types for a broken file
            units.append(RowGroup(Path(path), prefix, -1, 0, 1, bad=f"unreadable parquet file ({exc})"))
            continue
        try:
            layout = schema_layout(pf.schema_arrow)
        except InputError as exc:
            log.warning("%s: %s; the file is skipped", path, exc)
            units.append(RowGroup(Path(path), prefix, -1, 0, 1, bad=str(exc)))
            continue
        first = 0
        for group in range(pf.num_row_groups):
            size = pf.metadata.row_group(group).num_rows
            units.append(RowGroup(Path(path), prefix, group, first, size, layout))
            first += size
    return units


def read_group(unit: RowGroup) -> list[SigmaRow | BadRow]:
    """The rows of one unit of :func:`row_groups`, in order; an unreadable group gives one BadRow per row."""
    if unit.bad is not None:
        return [BadRow(unit.prefix, unit.bad)]
    ids = [f"{unit.prefix}-{unit.first + k:06d}" for k in range(unit.size)]
    try:
        columns = [*COLUMNS, "meta"] if unit.layout is not None and unit.layout.meta else list(COLUMNS)
        table = _parquet().ParquetFile(unit.path).read_row_group(unit.group, columns=columns).to_pylist()
    except Exception as exc:  # noqa: BLE001
        return [BadRow(row_id, f"unreadable row group ({exc})") for row_id in ids]
    if len(table) != len(ids):  # the file's metadata and its data disagree: none of its rows can be trusted
        return [BadRow(row_id, f"row group holds {len(table)} rows, its metadata says {len(ids)}") for row_id in ids]
    return [_row(row_id, record, unit.layout) for row_id, record in zip(ids, table, strict=True)]


def iter_rows(files) -> Iterator[SigmaRow | BadRow]:
    """Rows of every file (a Path, or a (Path, row-id prefix) pair), row group by row group; unreadable rows and
    files become :class:`BadRow`.

    Each file's column types are checked once, from its schema: a file with a column of the wrong type becomes
    ONE :class:`BadRow` (named by the file's prefix) whose reason names the column and the types it may have."""
    for unit in row_groups(files):
        yield from read_group(unit)


COLUMNS = ("instruction_list", "image_list")
INSTRUCTION_TYPES = "list<list<string>> or list<string>"
IMAGE_TYPES = "list<binary> or list<struct<bytes: binary, path: string>>"  # the latter: datasets' Image feature


@dataclass(frozen=True)
class SchemaLayout:
    """Which of the accepted forms a file's columns have."""

    nested_instructions: bool  # list<list<string>> (the released data) rather than list<string>
    image_structs: bool  # list<struct{bytes, path}> (Hugging Face ``datasets.Image``) rather than list<binary>
    meta: bool = False  # a string ``meta`` column (the generated worlds'), read with each row


def schema_layout(schema) -> SchemaLayout:
    """Check a file's pyarrow schema; raises InputError naming the column, the accepted types and the type found."""
    import pyarrow as pa

    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        raise InputError(f"the file has no {' or '.join(missing)} column (its columns: {', '.join(schema.names)})")
    is_list = lambda t: pa.types.is_list(t) or pa.types.is_large_list(t)  # noqa: E731
    is_text = lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)  # noqa: E731
    is_bytes = lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t)  # noqa: E731
    instructions, images = schema.field("instruction_list").type, schema.field("image_list").type
    nested = is_list(instructions) and is_list(instructions.value_type) and is_text(instructions.value_type.value_type)
    if not nested and not (is_list(instructions) and is_text(instructions.value_type)):
        raise InputError(f"instruction_list should be {INSTRUCTION_TYPES}, got {type_name(instructions)}")
    item = images.value_type if is_list(images) else None
    structs = item is not None and pa.types.is_struct(item)
    fields = {item.field(k).name: item.field(k).type for k in range(item.num_fields)} if structs else {}
    if not (item is not None and is_bytes(item)) and not ("bytes" in fields and is_bytes(fields["bytes"])):
        raise InputError(f"image_list should be {IMAGE_TYPES}, got {type_name(images)}")
    meta = "meta" in schema.names and is_text(schema.field("meta").type)
    return SchemaLayout(nested, structs, meta)


def type_name(t) -> str:
    """A pyarrow type written the way the error messages write them: ``list<list<string>>``."""
    import pyarrow as pa

    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{type_name(t.value_type)}>"
    if pa.types.is_struct(t):
        fields = (t.field(k) for k in range(t.num_fields))
        return "struct<" + ", ".join(f"{f.name}: {type_name(f.type)}" for f in fields) + ">"
    return str(t)


def _row(row_id: str, record: dict, layout: SchemaLayout) -> SigmaRow | BadRow:
    instructions, images = record["instruction_list"], record["image_list"]
    if layout.nested_instructions:
        instructions = instructions[0] if instructions else None
    if not instructions or instructions[0] is None:
        return BadRow(row_id, "instruction_list holds no instruction")
    if not images:
        return BadRow(row_id, "image_list is empty (the last image is the target)")
    out = []
    for k, image in enumerate(images):
        if layout.image_structs:
            if image is not None and image.get("bytes") is None and image.get("path"):
                return BadRow(
                    row_id,
                    f"image_list[{k}] has only a path ({image['path']}) and no bytes: the images must be stored in "
                    "the file (a path is relative to nothing we know)",
                )
            image = image.get("bytes") if image is not None else None
        if image is None:
            return BadRow(row_id, f"image_list[{k}] is empty")
        out.append(bytes(image))
    return SigmaRow(row_id, instructions[0], tuple(out), record.get("meta") or "")


@dataclass
class Example:
    """A row to write: an instruction and its images (references, then the target), with the ``family`` and
    ``meta`` columns that an evaluation reads."""

    family: str
    instruction: str
    images: list[Image.Image]  # references, then the target
    meta: dict = field(default_factory=dict)  # what the target must show (read by the evaluation)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def write_parquet(path: Path, rows: Iterator[Example], row_group: int = 1000) -> int:
    """Write rows in the SIGMA schema (plus ``family`` and ``meta``), atomically, one row group at a time.
    Returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("instruction_list", pa.list_(pa.list_(pa.string()))),
        ("image_list", pa.list_(pa.binary())),
        ("family", pa.string()),
        ("meta", pa.string()),
    ])  # fmt: skip
    count = 0

    def write(f) -> None:
        nonlocal count
        with pq.ParquetWriter(f, schema) as writer:
            rows_iter = iter(rows)
            while chunk := list(itertools.islice(rows_iter, row_group)):
                writer.write_table(pa.table({
                    "instruction_list": [[[e.instruction]] for e in chunk],
                    "image_list": [[_png(i) for i in e.images] for e in chunk],
                    "family": [e.family for e in chunk],
                    "meta": [json.dumps(e.meta) for e in chunk],
                }, schema=schema))  # fmt: skip
                count += len(chunk)

    atomic_write(path, write)
    return count
