"""The training-only boxed family (``sigma shapes make --boxed-rows``): a named shape drawn filling a layout box."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
from PIL import Image

from sigma_studio.model.shapes.tasks import HELD_OUT, examples, make_world
from sigma_studio.model.shapes.world import Thing, box_picture, render


def test_boxed_rows_draw_the_named_pair_filling_the_box(tmp_path):
    counts = make_world(tmp_path, rows=10, eval_rows=2, seed=4, auxiliary={"boxed": 12})
    assert counts["train/boxed"] == 12
    rows = pq.read_table(tmp_path / "train" / "boxed.parquet").to_pylist()
    for rec in rows:
        meta, ((instruction,),) = json.loads(rec["meta"]), rec["instruction_list"]
        assert instruction == f"Draw a {meta['colour']} {meta['shape']} placed like <layout>this box <image_1>."
        box_map, target = (Image.open(io.BytesIO(data)) for data in rec["image_list"])
        box = tuple(meta["box"])
        assert box_map.tobytes() == box_picture(box).tobytes()  # layout's reference: the white box on black
        assert target.tobytes() == render([Thing(meta["shape"], meta["colour"], box)]).tobytes()
        assert (meta["shape"], meta["colour"]) not in HELD_OUT and 0.3 * 64 <= box[2] == box[3] <= 0.6 * 64
    assert len({json.loads(rec["meta"])["shape"] for rec in rows}) > 2  # not one shape over and over
    held = [ex.meta for ex in examples("boxed", "eval", 8)]  # its eval rows target the held-out pairs, as text's
    assert all((m["shape"], m["colour"]) in HELD_OUT for m in held)
    make_world(tmp_path / "plans", rows=10, eval_rows=2, seed=4, auxiliary={"boxed": 3}, plans=("boxed",))
    for rec in pq.read_table(tmp_path / "plans" / "train" / "boxed.parquet").to_pylist():
        meta, ((instruction,),) = json.loads(rec["meta"]), rec["instruction_list"]
        assert instruction.endswith(f"this box <image_1>. <think>the {meta['shape']} is {meta['colour']}</think>")
    layouts = [ex.meta["box"] for ex in examples("layout", "train", 3, seed=4)]
    assert layouts == [[6.3, 0.5, 36.6, 36.6], [8.7, 13.7, 20.5, 20.5], [19.9, 14.7, 37.5, 37.5]]  # layout's own
    # draws unchanged by the box draw they now share
