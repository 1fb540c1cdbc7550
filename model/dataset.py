"""SIGMA-format parquet rows: ``instruction_list`` (only [0][0] is used) and ``image_list`` (encoded images;
the last is the generation target, the others are references), from local files or a Hugging Face dataset.

A row that cannot be read is yielded as a :class:`BadRow` with the reason, so a caller counts and skips it;
it never stops the iteration. Hugging Face datasets are read shard by shard: a shard is downloaded only when the
iteration reaches it.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .errors import InputError, MissingDependencyError
from .hub import HubOptions, WeightsUnavailableError, is_repo_id
from .images import MAX_INPUT_PIXELS, to_rgb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SigmaRow:
    row_id: str  # "<shard stem>-<row index>", stable across runs (used for resuming)
    instruction: str
    images: tuple[bytes, ...]

    def decode_images(self) -> list[Image.Image]:
        """Decode every image (RGB, transparency on white); raises InputError for a bad one."""
        out = []
        for k, data in enumerate(self.images):
            try:
                with Image.open(io.BytesIO(data)) as img:
                    if img.width * img.height > MAX_INPUT_PIXELS:
                        raise InputError(f"image {k} is {img.width}x{img.height}, too large to decode safely")
                    img.load()
                    out.append(to_rgb(img))
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                raise InputError(f"image {k} cannot be decoded ({exc})") from None
        return out


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


def parquet_files(source: str, opts: HubOptions | None = None) -> Iterator[tuple[Path, str]]:
    """(file, row-id prefix) of the local parquet files under ``source`` (a file or a directory, sorted), or of
    the shards of a HF dataset. The prefix is the path relative to ``source``, so row ids stay unique."""
    opts = opts or HubOptions()
    path = Path(source).expanduser()
    if path.is_file():
        yield path, path.stem
        return
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise InputError(f"{source} holds no .parquet files")
        for f in files:
            yield f, str(f.relative_to(path).with_suffix("")).replace("/", "__")
        return
    if not is_repo_id(source):
        raise InputError(f"{source} is neither a parquet file, a directory of them, nor a Hugging Face dataset id")
    yield from _hub_shards(source, opts)


def _hub_shards(repo: str, opts: HubOptions) -> Iterator[Path]:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        names = sorted(
            f for f in HfApi(token=opts.token).list_repo_files(repo, repo_type="dataset") if f.endswith(".parquet")
        )
    except (HfHubHTTPError, OSError) as exc:
        raise WeightsUnavailableError(
            f"Cannot list the dataset {repo} ({str(exc).splitlines()[0]}); pass a local directory of parquet files"
        ) from None
    for name in names:
        try:
            local = hf_hub_download(repo, name, repo_type="dataset", cache_dir=opts.cache_dir, token=opts.token)
            yield Path(local), name.removesuffix(".parquet").replace("/", "__")
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
            raise WeightsUnavailableError(f"Cannot download {repo}/{name} ({str(exc).splitlines()[0]})") from None


def iter_rows(files) -> Iterator[SigmaRow | BadRow]:
    """Rows of every file (a Path, or a (Path, row-id prefix) pair), row group by row group; unreadable rows and
    files become :class:`BadRow`. A row's index comes from the row-group sizes in the file's metadata, so a
    group that fails to read does not shift the ids (and resume positions) of the rows after it."""
    pq = _parquet()
    for item in files:
        path, prefix = item if isinstance(item, tuple) else (item, item.stem)
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many error types for a broken file
            yield BadRow(prefix, f"unreadable parquet file ({exc})")
            continue
        index = 0
        for group in range(pf.num_row_groups):
            size = pf.metadata.row_group(group).num_rows
            try:
                table = pf.read_row_group(group, columns=["instruction_list", "image_list"]).to_pylist()
            except Exception as exc:  # noqa: BLE001
                for k in range(size):
                    yield BadRow(f"{prefix}-{index + k:06d}", f"unreadable row group ({exc})")
                index += size
                continue
            for record in table:
                yield _row(f"{prefix}-{index:06d}", record)
                index += 1


def _row(row_id: str, record: dict) -> SigmaRow | BadRow:
    try:
        instruction = record["instruction_list"][0][0]
        images = tuple(bytes(b) for b in record["image_list"])
    except (TypeError, IndexError, KeyError) as exc:
        return BadRow(row_id, f"malformed row ({type(exc).__name__}: {exc})")
    if not isinstance(instruction, str):
        return BadRow(row_id, "instruction_list[0][0] is not text")
    if not images:
        return BadRow(row_id, "image_list is empty (the last image is the target)")
    return SigmaRow(row_id, instruction, images)
