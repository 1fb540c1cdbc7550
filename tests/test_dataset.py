"""SIGMA parquet rows: the accepted column types, one clear error for a wrong-typed file, bad rows skipped."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from sigma_studio.model.data.dataset import BadRow, SigmaRow, iter_rows

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

TEXT = "Make it <style>like <image_1>"
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # the datasets Image feature


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def write(path, instructions, instruction_type, images, image_type) -> list:
    table = pa.table(
        {"instruction_list": pa.array(instructions, instruction_type), "image_list": pa.array(images, image_type)}
    )
    pq.write_table(table, path)
    return list(iter_rows([path]))


@pytest.mark.parametrize(
    ("instructions", "instruction_type"),
    [([[[TEXT]], [["A cat"]]], pa.list_(pa.list_(pa.string()))), ([[TEXT], ["A cat"]], pa.list_(pa.string()))],
    ids=["list<list<string>>", "list<string>"],
)
@pytest.mark.parametrize(
    ("images", "image_type"),
    [
        ([[png(1), png(2)], [png(3)]], pa.list_(pa.binary())),
        ([[{"bytes": png(1), "path": "a.png"}, {"bytes": png(2), "path": None}], [{"bytes": png(3)}]], pa.list_(IMAGE)),
    ],
    ids=["list<binary>", "list<struct>"],
)
def test_both_forms_of_each_column_are_read(tmp_path, instructions, instruction_type, images, image_type):
    rows = write(tmp_path / "d.parquet", instructions, instruction_type, images, image_type)
    assert rows == [SigmaRow("d-000000", TEXT, (png(1), png(2))), SigmaRow("d-000001", "A cat", (png(3),))]


@pytest.mark.parametrize(
    ("column", "values", "arrow_type", "message"),
    [
        (
            "instruction_list",
            [[1], [2]],
            pa.list_(pa.int64()),
            "instruction_list should be list<list<string>> or list<string>, got list<int64>",
        ),
        (
            "instruction_list",
            [TEXT, TEXT],
            pa.string(),
            "instruction_list should be list<list<string>> or list<string>",
        ),
        (
            "image_list",
            [["a.png"], ["b.png"]],
            pa.list_(pa.string()),
            "image_list should be list<binary> or list<struct",
        ),
        (
            "image_list",
            [[{"path": "a.png"}], [{"path": "b.png"}]],
            pa.list_(pa.struct([("path", pa.string())])),
            "got list<struct<path: string>>",
        ),
    ],
)
def test_a_wrong_typed_file_gives_one_clear_error(tmp_path, column, values, arrow_type, message):
    good = {"instruction_list": ([[[TEXT]], [[TEXT]]], pa.list_(pa.list_(pa.string())))}
    good["image_list"] = ([[png(1)], [png(2)]], pa.list_(pa.binary()))
    good[column] = (values, arrow_type)
    rows = write(tmp_path / "bad.parquet", *good["instruction_list"], *good["image_list"])
    assert len(rows) == 1 and isinstance(rows[0], BadRow) and rows[0].row_id == "bad"
    assert message in rows[0].reason


def test_a_missing_column_is_named(tmp_path):
    pq.write_table(pa.table({"instruction_list": pa.array([[TEXT]], pa.list_(pa.string()))}), tmp_path / "m.parquet")
    (row,) = iter_rows([tmp_path / "m.parquet"])
    assert isinstance(row, BadRow) and "no image_list column" in row.reason


def test_bad_single_rows_are_skipped_with_a_reason(tmp_path):
    rows = write(
        tmp_path / "r.parquet",
        [[TEXT], [TEXT], [], [TEXT]],
        pa.list_(pa.string()),
        [[{"bytes": png(1), "path": None}], [{"bytes": None, "path": "photos/cat.png"}], [{"bytes": png(2)}], []],
        pa.list_(IMAGE),
    )
    assert isinstance(rows[0], SigmaRow) and rows[0].images == (png(1),)
    assert isinstance(rows[1], BadRow) and "only a path (photos/cat.png)" in rows[1].reason
    assert isinstance(rows[2], BadRow) and "instruction_list holds no instruction" in rows[2].reason
    assert isinstance(rows[3], BadRow) and "image_list is empty" in rows[3].reason
    assert [r.row_id for r in rows] == [f"r-00000{k}" for k in range(4)]
