"""The SIGMA-GEN converter as the paper describes it (issue 23, item 1): background-only prompts in the 50/50
alternation, one control channel dropped, masks and boxes loosened (the structure only), one structure input per
row, prepared identities when given; every draw counted in the summary. Row statistics over a fixed seed."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sigma_studio.model.data.sigmagen import CHANNELS, Scene, SigmaGenOptions, rows, scene_row, summary_lines
from sigma_studio.model.data.sigmagen_draw import augment_box, dilate_mask, drop_channel
from sigma_studio.model.images import opencv
from sigma_studio.model.shapes.scenes import shapes_scenes
from sigma_studio.model.shapes.world import COLOURS
from tests.test_sigmagen import coco, sigma  # noqa: F401  (the COCO-style fixture)

MAGENTA = (255, 0, 255)  # in no shapes-world picture: a prepared identity's pixels are recognisable in the sheet


def control(row) -> np.ndarray:
    return np.asarray(row.images[1])


@pytest.fixture(scope="module")
def paper_rows():
    """400 shapes-world rows at the paper's defaults, with their scenes and the converter's counts."""
    stats: dict = {}
    scenes = list(shapes_scenes(400, seed=5))
    out = list(rows(iter(scenes), SigmaGenOptions(tile=8), stats))
    return scenes, out, stats


def test_the_defaults_are_the_papers():
    d = SigmaGenOptions()
    assert d.precision == ("box", "box3d", "mask_depth") and d.precision_draw == "example"
    assert (d.channel_drop, d.compose_share, d.box_aspect_jitter) == (0.1, 0.5, 0.01)
    assert d.drop_channels == CHANNELS == ("ascending", "descending", "structure") and d.identities is None


def test_half_the_prompts_are_background_only_and_name_no_subject(paper_rows):
    scenes, out, stats = paper_rows
    forms = Counter(r.meta["form"] for r in out)
    assert abs(forms["background"] / len(out) - 0.5) < 0.08, forms
    for scene, row in zip(scenes, out, strict=True):
        if row.meta["form"] == "background":
            assert row.instruction.endswith("Place these subjects in a grey picture")
            assert not any(colour in row.instruction for colour in COLOURS)  # the text leaks no identity
        else:
            assert row.instruction.endswith(f"Place these subjects to compose: {scene.caption}")
    assert stats["prompts"][("background", "data")] == forms["background"]


def test_one_channel_is_dropped_in_a_tenth_of_the_rows(paper_rows):
    _, out, stats = paper_rows
    dropped = [r for r in out if r.meta["dropped"]]
    assert abs(len(dropped) / len(out) - 0.1) < 0.04, len(dropped)
    for row in out:
        empty = {CHANNELS[c] for c in range(3) if not control(row)[..., c].any()}
        kinds = set(row.meta["precision"])
        if row.meta["dropped"]:
            assert row.meta["dropped"] in empty
        # the routing maps always hold the subjects: only a drop empties one; the structure is empty under 2-D boxes
        assert empty - {"structure"} <= {row.meta["dropped"]}
        assert ("structure" in empty) == (row.meta["dropped"] == "structure" or kinds == {"box"})
    assert sum(stats["dropped"].values()) == len(out) and stats["dropped"]["none"] == len(out) - len(dropped)


def test_drop_zeroes_exactly_one_channel_among_those_that_hold_anything():
    rng, seen = random.Random(0), Counter()
    opts = SigmaGenOptions(channel_drop=1.0)
    for _ in range(300):
        full = np.full((4, 4, 3), 7, np.uint8)
        name = drop_channel(full, opts, rng)
        assert [CHANNELS[c] for c in range(3) if not full[..., c].any()] == [name]
        assert (full[..., [c for c in range(3) if CHANNELS[c] != name]] == 7).all()  # the others untouched
        seen[name] += 1
    assert all(80 <= seen[c] <= 120 for c in CHANNELS), seen
    no_structure = np.full((4, 4, 3), 7, np.uint8)
    no_structure[..., 2] = 0
    assert all(drop_channel(no_structure.copy(), opts, rng) != "structure" for _ in range(50))
    only = SigmaGenOptions(channel_drop=1.0, drop_channels=("structure",))
    assert drop_channel(no_structure, only, rng) is None  # nothing to drop: the row stays whole


def test_one_structure_input_per_row(paper_rows):
    _, out, stats = paper_rows
    kinds = Counter()
    for row in out:
        assert len(set(row.meta["precision"])) == 1, row.meta["precision"]
        kinds[row.meta["precision"][0]] += 1
    assert set(kinds) == {"box", "box3d", "mask_depth"} and min(kinds.values()) > 100, kinds  # about a third each
    assert stats["precision"] == kinds
    mixed = list(rows(shapes_scenes(40, seed=6), SigmaGenOptions(tile=8, precision_draw="subject"), {}))
    assert any(len(set(r.meta["precision"])) > 1 for r in mixed)  # per subject stays available


def test_mask_dilation_stays_within_its_bound():
    cv2, rng = opencv("test"), random.Random(0)
    mask = np.zeros((80, 80), bool)
    mask[20:60, 30:50] = True  # box 20 x 40: at 0.2, up to 4 px
    grown_by = set()
    for _ in range(60):
        grown, px = dilate_mask(mask, 0.2, rng)
        grown_by.add(px)
        assert 0 <= px <= 4 and (grown >= mask).all()
        distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
        assert distance[grown].max() <= px + 0.5  # no pixel further than its draw
        assert px == 0 or distance[grown].max() >= px - 0.5
    assert grown_by == {0, 1, 2, 3, 4}


def test_box_aspect_jitter_and_dilation_stay_within_their_bounds():
    rng = random.Random(0)
    jitter_only = SigmaGenOptions(box_dilation=0.0, box_aspect_jitter=0.01)
    dilate_only = SigmaGenOptions(box_dilation=0.05, box_aspect_jitter=0.0)
    ratios = []
    for _ in range(200):
        box, dilated, jittered = augment_box((100, 100, 300, 200), (1000, 1000), jitter_only, rng)
        ratio = ((box.x1 - box.x0) / (box.y1 - box.y0)) / 2.0
        ratios.append(ratio)
        assert 0.99 - 1e-9 <= ratio <= 1.01 + 1e-9 and not dilated and jittered
        assert abs((box.x1 - box.x0) * (box.y1 - box.y0) - 200 * 100) < 1e-6  # the same area
        box, dilated, jittered = augment_box((100, 100, 300, 200), (1000, 1000), dilate_only, rng)
        assert 90 <= box.x0 <= 100 and 95 <= box.y0 <= 100 and 300 <= box.x1 <= 310 and 200 <= box.y1 <= 205
        assert dilated and not jittered
    assert min(ratios) < 0.995 and max(ratios) > 1.005  # the whole range is drawn
    edge, *_ = augment_box((0, 0, 64, 64), (64, 64), SigmaGenOptions(box_dilation=1.0), rng)
    assert (edge.x0, edge.y0, edge.x1, edge.y1) == (0, 0, 64, 64)  # clipped to the picture


def test_loosened_structure_in_rows_and_the_target_untouched():
    cv2 = opencv("test")
    scenes = list(shapes_scenes(30, seed=8))
    masks = SigmaGenOptions(tile=8, channel_drop=0.0, precision=("mask",), mask_dilation=0.2)
    boxes = SigmaGenOptions(tile=8, channel_drop=0.0, precision=("box",), box_dilation=0.1, box_aspect_jitter=0.0)
    for opts in (masks, boxes):
        stats: dict = {}
        for scene, row in zip(scenes, rows(iter(scenes), opts, stats), strict=True):
            assert np.array_equal(np.asarray(row.images[2]), np.asarray(scene.image))  # the target is the picture
            region = control(row)[..., 0] > 0
            kept = [i for i in scene.instances if i.mask.sum() >= opts.min_area * scene.image.width**2]
            union = np.logical_or.reduce([i.mask for i in kept])
            if opts is masks:
                assert (region >= union).all()
                far = cv2.distanceTransform((~union).astype(np.uint8), cv2.DIST_L2, 5)[region]
                assert far.max() <= 0.2 * 32 + 0.5  # things are at most 32 px: at most 6 px out
            else:
                boxes_union = np.zeros_like(union)
                for i in kept:
                    ys, xs = np.nonzero(i.mask)
                    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
                    dx, dy = 0.1 * (x1 - x0) + 1, 0.1 * (y1 - y0) + 1  # + 1: the box's edge is rounded to pixels
                    boxes_union[max(0, int(y0 - dy)) : int(y1 + dy), max(0, int(x0 - dx)) : int(x1 + dx)] = True
                    assert region[y0:y1, x0:x1].all()  # the box never shrinks
                assert (region <= boxes_union).all()
        assert stats["augment"]["masks dilated" if opts is masks else "boxes dilated"] > 20


def _prepared(tmp_path, scenes, every: int = 2):
    """A prepared (magenta) identity for every other instance of each scene; returns how many were written."""
    written = 0
    for scene in scenes:
        for inst in scene.instances[::every]:
            (tmp_path / scene.scene_id).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 30), MAGENTA).save(tmp_path / scene.scene_id / f"{inst.key}.png")
            written += 1
    return written


def test_prepared_identities_are_used_when_given(tmp_path):
    scenes = list(shapes_scenes(20, seed=9))
    written = _prepared(tmp_path / "ids", scenes)
    opts = SigmaGenOptions(tile=8, identities=str(tmp_path / "ids"), max_subjects=5, min_area=0.0)  # every instance
    stats: dict = {}
    out = list(rows(iter(scenes), opts, stats))
    assert (
        stats["identities"]["prepared"] == written
        and stats["identities"]["cropped"] == sum(len(s.instances) for s in scenes) - written
    )
    for row in out:
        sheet = np.asarray(row.images[0]).reshape(-1, 3)
        has_magenta = (sheet == MAGENTA).all(axis=1).any()
        assert has_magenta == (row.meta["identities"]["prepared"] > 0)
    (tmp_path / "ids" / scenes[0].scene_id / f"{scenes[0].instances[0].key}.png").write_bytes(b"not a png")
    stats = {}
    assert len(list(rows(iter(scenes), opts, stats))) == len(scenes) - 1  # a bad file skips its scene, counted
    assert stats["skipped_by"] == {"a prepared identity could not be read": 1}
    odd = Scene("../ids", scenes[1].image, scenes[1].instances, scenes[1].depth)  # never looked up outside DIR
    assert scene_row(odd, opts, random.Random(0)).meta["identities"]["prepared"] == 0


def test_coco_background_captions_prepared_identities_and_the_summary(capsys, coco, tmp_path):  # noqa: F811
    data = json.loads((coco / "instances.json").read_text())
    data["images"][1]["background_caption"] = "an empty meadow"
    (coco / "instances.json").write_text(json.dumps(data))
    (tmp_path / "ids" / "0").mkdir(parents=True)  # picture 0's second annotation (the tent), by its position
    Image.new("RGB", (10, 10), MAGENTA).save(tmp_path / "ids" / "0" / "1.png")
    out = tmp_path / "rows.parquet"
    code, text = sigma(capsys, "sigmagen", "make", "--coco", coco / "instances.json", "--images", coco / "pictures",
                       "--out", out, "--tile", "16", "--compose-share", "0", "--identities", tmp_path / "ids",
                       "--precision", "box", "--box-dilation", "0.2", "--mask-dilation", "0.2",
                       "--box-aspect-jitter", "0.05", "--drop-channels", "ascending", "--channel-drop", "1",
                       "--background-prompt", "a quiet place")  # fmt: skip
    assert code == 0, text
    text = " ".join(text.split())
    metas = [json.loads(m) for m in pq.read_table(out, columns=["meta"]).column("meta").to_pylist()]
    instructions = [r[0][0] for r in pq.read_table(out, columns=["instruction_list"]).column(0).to_pylist()]
    assert instructions[0].endswith("Place these subjects in a quiet place")  # no background caption: generic
    assert instructions[1].endswith("Place these subjects in an empty meadow")  # the data's
    assert "2 background-only (1 the data's, 1 the generic 'a quiet place')" in text
    assert "2 rows with one channel zeroed (2 ascending, 0 descending, 0 structure), 0 whole" in text
    assert "precision (one per example): 2 box rows" in text and "3 boxes dilated, 3 boxes aspect-jittered" in text
    assert "identities: 1 prepared, 2 cropped from the target" in text and "2 of 3 identities are crops" in text
    assert "scenes skipped: " in text and "1 × its picture or depth map could not be used" in text
    assert "1 × no instance covers 0.5% of the picture" in text
    assert [m["identities"] for m in metas] == [{"prepared": 1, "cropped": 1}, {"prepared": 0, "cropped": 1}]


def test_the_shapes_world_with_every_option(capsys, tmp_path):
    scenes = list(shapes_scenes(30, seed=4))
    written = _prepared(tmp_path / "ids", scenes, every=1)
    out = tmp_path / "rows.parquet"
    code, text = sigma(capsys, "sigmagen", "make", "--shapes", "30", "--seed", "4", "--out", out, "--tile", "8",
                       "--identities", tmp_path / "ids", "--precision", "box,box3d,mask,mask_depth",
                       "--precision-draw", "subject", "--channel-drop", "0.5", "--drop-channels", "structure",
                       "--mask-dilation", "0.1", "--box-dilation", "0.1", "--box-aspect-jitter", "0.05",
                       "--compose-share", "0.3", "--background-prompt", "unused", "--full-depth", "0.2",
                       "--crop-jitter", "0", "--flip", "0", "--max-subjects", "5", "--min-area", "0",
                       "--routing-step", "50")  # fmt: skip
    assert code == 0, text
    text = " ".join(text.split())
    metas = [json.loads(m) for m in pq.read_table(out, columns=["meta"]).column("meta").to_pylist()]
    assert len(metas) == 30 and f"identities: {written} prepared, 0 cropped" in text and "are crops" not in text
    forms = Counter(m["form"] for m in metas)
    assert f"{forms['background']} background-only ({forms['background']} the data's, 0 the generic" in text
    dropped = sum(m["dropped"] == "structure" for m in metas)
    assert f"{dropped} rows with one channel zeroed (0 ascending, 0 descending, {dropped} structure)" in text
    assert 0 < dropped and all(m["dropped"] in (None, "structure") for m in metas)
    assert f"whole-scene depth: {sum(m['full_depth'] for m in metas)} rows" in text
    assert "precision (one per subject):" in text and all(m["routing_step"] == 50 for m in metas)


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--precision-draw", "row", "--precision-draw row: choose example"),
        ("--drop-channels", "red", "--drop-channels red: choose from ascending, descending, structure"),
        ("--identities", "nowhere", "is not a folder"),
        ("--background-prompt", " ", "--background-prompt must not be empty"),
        ("--mask-dilation", "2", "--mask-dilation must be in [0, 1]"),
        ("--box-aspect-jitter", "-0.1", "--box-aspect-jitter must be in [0, 1]"),
    ],
)
def test_bad_options_are_one_line(capsys, tmp_path, flag, value, message):
    code, text = sigma(capsys, "sigmagen", "make", "--shapes", "2", flag, value, "--out", tmp_path / "x.parquet")
    text = " ".join(text.split())
    assert code == 2 and message in text and "Traceback" not in text and not (tmp_path / "x.parquet").exists()


def test_a_precision_the_data_cannot_give_skips_the_scene_and_says_why(coco):  # noqa: F811
    from sigma_studio.model.data.sigmagen import coco_scenes

    stats: dict = {}
    opts = SigmaGenOptions(tile=8, precision=("box3d",))  # picture 0's square has no 3-D box, nor picture 1's pole
    assert list(rows(coco_scenes(coco / "instances.json", coco / "pictures"), opts, stats)) == []
    assert stats["skipped_by"]["no --precision of box3d fits it (mask_depth needs a depth map, box3d a 3-D box for "
                               "each subject)"] == 2  # fmt: skip
    assert any(line.startswith("scenes skipped: 2 × no --precision") for line in summary_lines(stats, opts))
