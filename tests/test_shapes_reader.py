"""The pixel readers cannot be fooled: pictures drawn with the world's own rules (no model) that are right score
100 %, and pictures that are wrong in a way a lenient reader misses score no more than chance.

"Chance" for a constant or copied picture is the share of rows on which that picture really is a right answer (a
green square is the answer to "a green square"): the reader must give it nothing on any other row.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image, ImageFilter

from sigma_studio.model.data.sigmagen import SigmaGenOptions, rows
from sigma_studio.model.shapes.evaluate import score
from sigma_studio.model.shapes.scenes import shapes_scenes
from sigma_studio.model.shapes.sigmagen_eval import score_scene, summarise
from sigma_studio.model.shapes.tasks import FAMILIES, examples
from sigma_studio.model.shapes.world import CANVAS, COLOURS, Thing, centred, mask, render

ROWS = 24  # held-out rows per family (compose: 12 swap pairs)


@pytest.fixture(scope="module")
def held_out():
    return {family: list(examples(family, "eval", ROWS, seed=0)) for family in FAMILIES}


def right(held_out, picture) -> dict[str, list[bool]]:
    """Per family, whether each row's ``picture(example)`` is right (None: the row is not tried)."""
    out = {}
    for family, rows_ in held_out.items():
        out[family] = [score(img, ex.meta, family)["ok"] for ex in rows_ if (img := picture(ex)) is not None]
    return out


def on(ex, *things: Thing) -> Image.Image:
    return render(list(things), background=tuple(ex.meta["background"]))


def target(ex, box=None) -> Thing:
    return Thing(ex.meta["shape"], ex.meta["colour"], tuple(box or ex.meta["box"]))


def corner(box) -> tuple[float, float, float, float]:
    """The same size in the corner furthest from ``box``."""
    x, y, w, h = box
    return (0.0 if x + w / 2 > CANVAS / 2 else CANVAS - w, 0.0 if y + h / 2 > CANVAS / 2 else CANVAS - h, w, h)


def scaled(box, factor: float) -> tuple[float, float, float, float]:
    """The same centre (moved in just enough to stay on the canvas), the side times ``factor``."""
    x, y, w, _ = box
    side = min(CANVAS, w * factor)
    cx, cy = (min(max(c + w / 2, side / 2), CANVAS - side / 2) for c in (x, y))
    return (cx - side / 2, cy - side / 2, side, side)


def test_ground_truth_scores_100_percent_even_blurred(held_out):
    assert all(all(v) for v in right(held_out, lambda ex: ex.images[-1]).values())
    blurred = right(held_out, lambda ex: ex.images[-1].filter(ImageFilter.GaussianBlur(0.8)))
    assert all(all(v) for v in blurred.values()), blurred


def test_a_blank_picture_scores_zero(held_out):
    blank = right(held_out, lambda ex: Image.new("RGB", (CANVAS, CANVAS), tuple(ex.meta["background"])))
    assert not any(any(v) for v in blank.values())


@pytest.mark.parametrize("colour", list(COLOURS))
def test_a_constant_square_is_right_only_where_it_is_the_target(held_out, colour):
    square = centred("square", colour, CANVAS / 2)
    for family, rows_ in held_out.items():
        for ex in rows_:
            if COLOURS[colour] == tuple(ex.meta["background"]):
                continue
            is_target = (ex.meta["shape"], ex.meta["colour"]) == ("square", colour)
            assert not score(on(ex, square), ex.meta, family)["ok"] or is_target, (family, ex.meta)


def test_a_square_in_the_right_colour_scores_the_share_of_square_targets_and_no_more(held_out):
    """The audit's "25 %": two of the eight held-out pairs are squares, and on those rows a square is the answer."""
    squares = right(held_out, lambda ex: on(ex, centred("square", ex.meta["colour"], CANVAS / 2)))
    for family, rows_ in held_out.items():
        share = sum(ex.meta["shape"] == "square" for ex in rows_) / len(rows_)
        assert sum(squares[family]) / len(rows_) <= share, family
        if family != "layout":  # centred targets of the world's sizes: the centred square is right on every one
            assert sum(squares[family]) / len(rows_) == share, family


def test_a_copy_of_an_input_is_right_only_where_it_is_the_target(held_out):
    copies = {family: 0 for family in FAMILIES}
    for which in (0, -2):  # the first reference, the last reference
        for family, rows_ in held_out.items():
            for ex in rows_:
                if len(ex.images) < 2 or not score(ex.images[which], ex.meta, family)["ok"]:  # text: no reference
                    continue
                copies[family] += 1
                # only layout's reference object (centred, the target's shape and colour) can be the target: when
                # the box sits on the centre at about its size. Its pixels must then overlap the target's.
                assert family == "layout", (family, which, ex.instruction)
                px = np.asarray(ex.images[which].convert("RGB"), np.float32)
                drawn = np.abs(px - np.array(ex.meta["background"], np.float32)).max(-1) > 28
                want = np.asarray(mask(ex.meta["shape"], tuple(ex.meta["box"]))) > 127
                assert (drawn & want).sum() / (drawn | want).sum() >= 0.45, ex.meta
    assert copies["layout"] <= 4 and sum(copies.values()) == copies["layout"], copies


def test_the_right_shape_at_the_wrong_place_or_size_scores_zero(held_out):
    wrong = {
        "corner": lambda ex: on(ex, target(ex, corner(ex.meta["box"]))),
        "14 px in a corner": lambda ex: on(ex, target(ex, corner(scaled(ex.meta["box"], 14 / ex.meta["box"][2])))),
        "half the size": lambda ex: on(ex, target(ex, scaled(ex.meta["box"], 0.5))),
        "1.6 times the size": lambda ex: on(ex, target(ex, scaled(ex.meta["box"], 1.6))),
        "with a 10 px copy in a corner": lambda ex: on(
            ex, target(ex), target(ex, corner(scaled(ex.meta["box"], 10 / ex.meta["box"][2])))
        ),
    }
    for name, picture in wrong.items():
        got = right(held_out, picture)
        assert not any(any(v) for v in got.values()), (name, got)


def test_a_foreground_that_fits_no_template_has_no_shape():
    from sigma_studio.model.shapes.reader import read

    two = render([Thing("circle", "red", (4, 4, 22, 22)), Thing("circle", "red", (38, 38, 22, 22))])
    assert read(two).shape is None and read(two).colour == "red"
    bar = Image.new("RGB", (CANVAS, CANVAS), (200, 200, 200))
    bar.paste(COLOURS["blue"], (8, 28, 56, 36))
    assert read(bar).shape is None
    assert read(render([centred("star", "blue", 30)])).shape == "star"


# --- SIGMA-GEN ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes():
    """Held-out-like SIGMA-GEN rows (every precision), 2-5 subjects: (example, layers)."""
    out = []
    for n in range(2, 6):
        opts = SigmaGenOptions(channel_drop=0.0, seed=70 + n, max_subjects=n, tile=32)
        out += [(ex, ex.meta["layers"]) for ex in rows(shapes_scenes(6, seed=70 + n, subjects=(n, n)), opts, {})]
    return out


def scene_summary(scenes, picture) -> dict:
    records = []
    for ex, layers in scenes:
        img = picture(ex, layers)
        if img is not None:
            records.append({"meta": ex.meta, "verdict": score_scene(img, layers, meta=ex.meta)})
    return summarise(records)["all"]


def test_true_scenes_score_100_percent_and_blank_or_copied_pictures_zero(scenes):
    truth = scene_summary(scenes, lambda ex, _: ex.images[-1])
    assert truth["right"] == 1.0 and truth["scenes_all_right"] == 1.0 and truth["extras"] == 0
    assert truth["ordering"] == 1.0 and truth["subjects"] > 60
    blank = scene_summary(scenes, lambda *_: Image.new("RGB", (CANVAS, CANVAS), (200, 200, 200)))
    assert blank["right"] == 0.0 and blank["ordering"] == 0.0
    sheet = scene_summary(scenes, lambda ex, _: ex.images[0])  # a copy of the identity sheet
    assert sheet["right"] <= 1 / 48 and sheet["scenes_all_right"] == 0.0, sheet
    # A copy of the spatial control draws every mask-placed subject's own mask, in the control's colours: its shape
    # and place come from the input, so its colour is all that is left to chance (1 in 8), and no box-placed subject
    # can be right.
    for ex, layers in scenes:
        for subject in score_scene(ex.images[1], layers, meta=ex.meta)["subjects"]:
            assert not subject.get("ok") or subject["placed_by"] == "mask", subject
    control = scene_summary(scenes, lambda ex, _: ex.images[1])
    assert control["right"] <= 1 / 8 and control["scenes_all_right"] == 0.0, control


def _free_box(layers, side: float, rng: random.Random, taken=()):
    """A box of ``side`` whose shape touches no thing of ``layers`` (nor ``taken``), 2 px apart; None if none."""
    used = np.logical_or.reduce([np.asarray(mask(t["shape"], tuple(t["box"]))) > 0 for t in [*layers, *taken]])
    used = np.pad(used, 2)
    for _ in range(300):
        x, y = rng.uniform(0, CANVAS - side), rng.uniform(0, CANVAS - side)
        box = np.pad(np.asarray(mask("square", (x, y, side, side))) > 0, 2)
        if not (
            used & np.logical_or.reduce([np.roll(box, (dy, dx), (0, 1)) for dy in (-2, 0, 2) for dx in (-2, 0, 2)])
        ).any():
            return (x, y, side, side)
    return None


def _draw(layers) -> Image.Image:
    return render([Thing(t["shape"], t["colour"], tuple(t["box"])) for t in layers])


def _tamper(scenes, change):
    """For every scene where ``change(layers, rng)`` gives (new layers, index of the subject it wrongs): that
    subject's verdict and the scene's, scored against the original layers."""
    rng, out = random.Random(0), []
    for ex, layers in scenes:
        changed = change(layers, rng)
        if changed is not None:
            drawn, k = changed
            verdict = score_scene(_draw(drawn), layers, meta=ex.meta)
            out.append((verdict["subjects"][k], verdict))
    return out


def test_a_subject_drawn_twice_is_wrong(scenes):
    def twice(layers, rng):
        k = len(layers) - 1  # the nearest: nothing covers it
        box = _free_box(layers, layers[k]["box"][2], rng)
        return None if box is None else ([*layers, {**layers[k], "box": list(box)}], k)

    tried = _tamper(scenes, twice)
    assert len(tried) >= 6
    for subject, _ in tried:
        assert subject["scored"] and not subject["ok"] and not subject["alone"], subject


def test_a_subject_outside_its_box_is_wrong(scenes):
    def moved(layers, rng):
        k = len(layers) - 1
        box = _free_box(layers, layers[k]["box"][2], rng)
        return None if box is None else ([*layers[:k], {**layers[k], "box": list(box)}], k)

    tried = _tamper(scenes, moved)
    assert len(tried) >= 6
    for subject, _ in tried:
        # its place fails, unless a thing of its colour fills it (then the stray copy still makes it wrong)
        assert not subject["ok"] and not (subject["place"] and subject["alone"]), subject
    assert sum(not subject["place"] for subject, _ in tried) >= len(tried) - 1


def test_a_subject_at_the_wrong_size_is_wrong_and_an_extra_object_spoils_the_scene(scenes):
    def small(layers, rng):
        k = len(layers) - 1
        if any(t["colour"] == layers[k]["colour"] for t in layers[:k]):
            return None  # where two things of one colour overlap, the pixels cannot tell which is which
        x, y, w, h = layers[k]["box"]
        return [*layers[:k], {**layers[k], "box": [x + w / 4, y + h / 4, w / 2, h / 2]}], k

    tried = _tamper(scenes, small)
    assert len(tried) >= 12
    for subject, _ in tried:
        assert not subject["ok"], subject

    def extra(layers, rng):
        free = [c for c in COLOURS if c not in {t["colour"] for t in layers}]
        box = _free_box(layers, 16.0, rng)
        return None if box is None else ([*layers, {"shape": "circle", "colour": free[0], "box": list(box)}], 0)

    tried = _tamper(scenes, extra)
    assert len(tried) >= 6
    for _, verdict in tried:
        assert verdict["extras"] == 1, verdict
