"""The training stream's order: every epoch reads the row groups in a seeded order and permutes each window's rows,
so a dataset written one task family per file is mixed within each step; a resumed run skips, unread, what it
trained on; the autoencoder's pictures are drawn from every file."""

from __future__ import annotations

import io
from collections import Counter

import pytest
from PIL import Image

import sigma_studio.finetune.data as data
from sigma_studio.finetune.autoencoder import load_images
from sigma_studio.finetune.config import TrainConfig
from sigma_studio.finetune.data import epoch_rows, family_of
from sigma_studio.model.data.dataset import BadRow, SigmaRow, iter_rows, parquet_files, row_groups
from sigma_studio.model.errors import InputError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

FAMILIES = ("background", "compose", "layout", "select", "text")
PER_FILE = 60


def png(value: int, size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (value % 256, value // 256, 7)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Five families, one file each, row groups of 20 rows (as the shapes world writes them, one file a family)."""
    folder = tmp_path_factory.mktemp("world")
    for f, family in enumerate(FAMILIES):
        n = [f * PER_FILE + k for k in range(PER_FILE)]
        table = pa.table({"instruction_list": pa.array([[f"{family} {k}"] for k in n], pa.list_(pa.string())),
                          "image_list": pa.array([[png(k)] for k in n], pa.list_(pa.binary()))})  # fmt: skip
        pq.write_table(table, folder / f"{family}.parquet", row_group_size=20)
    return folder


def ids(stream) -> list[str]:
    return [row.row_id for _, row in stream]


def test_an_epoch_is_a_seeded_permutation_of_every_row(world):
    units = row_groups(parquet_files(str(world)))
    in_order = [row.row_id for row in iter_rows(parquet_files(str(world)))]
    epoch0 = ids(epoch_rows(units, seed=3, epoch=0, window=10_000))
    assert sorted(epoch0) == sorted(in_order) and len(set(epoch0)) == len(in_order)
    assert epoch0 != in_order
    assert epoch0 == ids(epoch_rows(units, seed=3, epoch=0, window=10_000))  # the same seed and epoch: the same
    assert epoch0 != ids(epoch_rows(units, seed=3, epoch=1, window=10_000))  # each epoch its own order
    assert epoch0 != ids(epoch_rows(units, seed=4, epoch=0, window=10_000))
    places = [i for i, _ in epoch_rows(units, seed=3, epoch=0, window=10_000)]
    assert places == list(range(len(in_order)))
    assert ids(epoch_rows(units, seed=3, epoch=0, window=0)) == in_order  # 0: the files in order


@pytest.mark.parametrize("window", [10_000, 100])
def test_every_stretch_of_the_stream_mixes_the_families(world, window):
    """The old stream trained one family after another; now any 30 consecutive rows hold at least three families
    (a window of 100 rows holds five random row groups of 20)."""
    order = ids(epoch_rows(row_groups(parquet_files(str(world))), seed=0, epoch=0, window=window))
    for start in range(0, len(order) - 30, 30):
        assert len({family_of(i) for i in order[start : start + 30]}) >= 3, order[start : start + 30]


def test_a_resumed_epoch_continues_exactly_and_reads_nothing_before_it(world, monkeypatch):
    units = row_groups(parquet_files(str(world)))
    full = list(epoch_rows(units, seed=1, epoch=2, window=100))
    read = Counter()
    real = data.read_group
    monkeypatch.setattr(data, "read_group", lambda unit: read.update([unit.prefix]) or real(unit))
    tail = list(epoch_rows(units, seed=1, epoch=2, window=100, start=200))
    assert [(i, r.row_id) for i, r in tail] == [(i, r.row_id) for i, r in full[200:]]
    assert sum(read.values()) * 20 <= len(full) - 200 + 100  # the windows before row 200 were never read


def test_a_bad_file_is_one_bad_row_wherever_it_falls(world, tmp_path):
    for f in world.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    rows = [row for _, row in epoch_rows(row_groups(parquet_files(str(tmp_path))), seed=0, epoch=0, window=50)]
    bad = [row for row in rows if isinstance(row, BadRow)]
    assert len(bad) == 1 and bad[0].row_id == "broken" and "unreadable parquet file" in bad[0].reason
    assert sum(isinstance(row, SigmaRow) for row in rows) == len(FAMILIES) * PER_FILE


def test_the_autoencoder_draws_its_pictures_from_every_file(world):
    """It used to take the first N pictures in file order: two families of the shapes world, never its
    multi-object scenes."""
    pictures = load_images(str(world), 50, seed=0)
    assert pictures.shape == (50, 3, 16, 16)
    reds = ((pictures[:, 0, 0, 0] + 1) * 127.5).round().int()  # red + 256 * green encodes the row's number
    greens = ((pictures[:, 1, 0, 0] + 1) * 127.5).round().int()
    files = Counter(int(v) // PER_FILE for v in reds + 256 * greens)
    assert set(files) == set(range(len(FAMILIES))), files


def test_the_shuffle_window_is_checked_and_a_world_recipe_permutes_all_its_rows():
    with pytest.raises(InputError, match="--shuffle-rows must be a whole number of at least 0"):
        TrainConfig(out="x", shuffle_rows=-1)
    assert TrainConfig(out="x").shuffle_rows == 10_000
    from sigma_studio.finetune.shapes_recipe import ShapesRecipe

    assert ShapesRecipe().train_config().shuffle_rows >= ShapesRecipe().rows * 2


def test_a_trained_pass_meets_every_family_in_its_first_steps(world, tmp_path):
    """The Trainer's own stream: its first 40 samples come from at least four families."""
    from sigma_studio.finetune.trainer import Trainer

    trainer = Trainer(TrainConfig(out=str(tmp_path / "run"), dataset=str(world), held_out=0.0, seed=0))
    first = [row.row_id for _, (_, row) in zip(range(40), trainer.rows(), strict=False)]
    assert len({family_of(i) for i in first}) >= 4


def test_the_default_window_mixes_files_written_in_groups_of_a_thousand_rows(tmp_path):
    """``write_parquet`` writes row groups of 1 000 rows: the default window (10 000 rows) must hold several of them,
    or each window would be one family's group and the stream would still train one family at a time."""
    from sigma_studio.model.data.dataset import Example, write_parquet

    tiny = Image.new("RGB", (8, 8))
    for family in FAMILIES:
        write_parquet(tmp_path / f"{family}.parquet", (Example(family, f"{family} {k}", [tiny]) for k in range(2000)))
    units = row_groups(parquet_files(str(tmp_path)))
    assert {u.size for u in units} == {1000}
    order = ids(epoch_rows(units, seed=0, epoch=0, window=TrainConfig(out="x").shuffle_rows))
    for start in range(0, len(order) - 50, 50):
        assert len({family_of(i) for i in order[start : start + 50]}) >= 3


def test_an_autoencoder_source_without_a_readable_image_is_one_clear_error(tmp_path):
    table = pa.table({"instruction_list": pa.array([["x"]], pa.list_(pa.string())),
                      "image_list": pa.array([[b"not an image"]], pa.list_(pa.binary()))})  # fmt: skip
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="holds no readable image to train the autoencoder on"):
        load_images(str(tmp_path), 10)
