"""What the page shows, without a browser: browser wording, escaped errors, the box canvas, the routing colours,
and filling the page from a record or an example."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gradio")

from sigma_studio.model import GenerationConfig  # noqa: E402
from sigma_studio.model.request.control import PALETTE  # noqa: E402
from sigma_studio.webui.display import browser_text, canvas_image, colour_routing, error_html  # noqa: E402
from sigma_studio.webui.examples import SHAPES_EXAMPLES  # noqa: E402
from sigma_studio.webui.restore import example_values, history_entry, restore_values  # noqa: E402


def test_messages_speak_browser_and_keep_their_tokens():
    msg = "<img5> names an image that was not given (given: img1); pass --image img5=FILE"
    assert browser_text(msg) == "<img5> names an image that was not given (given: img1); upload an image into img5"
    assert browser_text("--size 100x64 is not a multiple of 16") == "the size 100x64 is not a multiple of 16"
    assert browser_text("/tmp/gradio/abc123/photo.svg is not a readable image") == "photo.svg is not a readable image"
    box = error_html("Unknown token <styel>. Did you mean <style>?")
    assert "&lt;styel&gt;" in box and "&lt;style&gt;" in box and "<styel>" not in box
    assert error_html("") == ""


def test_the_canvas_draws_boxes_and_the_pending_corner():
    img = np.asarray(canvas_image([[0.1, 0.1, 0.5, 0.5, "cat", "img1"]], 100, corner=(80, 80)))
    assert tuple(img[30, 10]) == PALETTE[0]  # the box outline, in the first box colour
    assert tuple(img[80, 80]) == (20, 20, 20)  # the corner marker
    assert tuple(img[95, 5]) == (235, 235, 235)  # empty canvas elsewhere


def test_routing_map_in_box_colours():
    intensity = np.array([[0, 10], [20, 20]], dtype=np.uint8)
    out = np.asarray(colour_routing(intensity))
    assert tuple(out[0, 1]) == PALETTE[0] and tuple(out[1, 0]) == PALETTE[1] and tuple(out[0, 0]) == (30, 30, 30)
    out = np.asarray(colour_routing(intensity * 5, step=50))  # a model trained with another routing step
    assert tuple(out[0, 1]) == PALETTE[0] and tuple(out[1, 0]) == PALETTE[1]


def test_history_restores_prompt_references_and_settings(tmp_path):
    ref = tmp_path / "a.png"
    ref.write_bytes(b"")  # only its existence matters here
    record = {
        "prompt": "a <style>look <img1> and <img2>",
        "images": [
            {"name": "img1", "role": "reference", "file": str(ref)},
            {"name": "img2", "role": "reference", "file": str(tmp_path / "gone.png")},
        ],  # fmt: skip
        "config": {"steps": 7, "seed": 42, "size": [64, 96], "cfg_interval": [0.2, 1.0]},
        "controls": {"boxes": ["0.1,0.2,0.5,0.9:cat"]},
    }
    state, values = restore_values(record, GenerationConfig())
    assert state.slots[0].image == str(ref) and state.slots[0].tokens == ("<style>",) and not state.slots[1].filled
    assert "img2 no longer exist" in state.error
    tab, kind, canny, rows, solid, masks, background = values[:LAYOUT]
    assert kind == "boxes" and rows == [[0.1, 0.2, 0.5, 0.9, "cat", ""]] and solid == masks == [] and not background
    preset, width, height, steps = values[LAYOUT : LAYOUT + 4]
    assert (preset, width, height, steps) == ("custom", 96, 64, 7) and values[LAYOUT + 10] == 42
    assert history_entry("x.png", record)["caption"].startswith("seed 42 · a <style>look")


LAYOUT = 7  # tab, kind, canny image, boxes, 3-D boxes, masks, background; then the settings


def test_a_restored_sigmagen_record_fills_every_placement_table(tmp_path):
    """Subjects by box, 3-D box and mask, and the background, come back into their tables; a mask is found again
    only among the server's own stored masks, a background only where ``usable`` allows."""
    from PIL import Image

    from sigma_studio.webui.guard import store_mask, stored_mask

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    kept = store_mask(Image.new("L", (64, 64), 255), uploads)
    bg = tmp_path / "bg.png"
    bg.write_bytes(b"")
    subjects = ["img1@box=0.1,0.2,0.5,0.6:star", "img2@box3d=-0.6,0.55,3.0,1.3,1.3,0.02", f"img3@mask={kept}",
                "img3@mask=/etc/passwd"]  # fmt: skip
    record = {"prompt": "a grey picture", "config": {"cfg_interval": [0.0, 1.0]},
              "controls": {"subjects": subjects, "background": str(bg)}}  # fmt: skip
    mask_name = lambda v: p.name if (p := stored_mask(v, uploads)) else None  # noqa: E731
    state, values = restore_values(record, GenerationConfig(), lambda path: path, mask_name)
    assert state.error == "the mask of img3 no longer exists: upload it again"  # the row naming /etc/passwd
    tab, kind, canny, rows, solid, masks, background = values[:LAYOUT]
    assert kind == "boxes" and rows == [[0.1, 0.2, 0.5, 0.6, "star", "img1"]]
    assert solid == [[-0.6, 0.55, 3.0, 1.3, 1.3, 0.02, 0.0, "", "img2"]]
    assert masks == [[kept.name, "", "img3"]] and background == str(bg)  # /etc/passwd is not one of its masks
    state, values = restore_values(record, GenerationConfig(), lambda path: None, mask_name)
    assert values[LAYOUT - 1] is None and "the background" in state.error  # outside the server's folders: not shown
    canny = {"prompt": "x", "config": {"cfg_interval": [0.0, 1.0]}, "controls": {"canny": "/etc/hostname"}}
    state, values = restore_values(canny, GenerationConfig(), lambda path: None)
    assert values[1] == "canny" and values[2] is None and "the Canny picture" in state.error


def test_examples_fill_every_field(tmp_path):
    state, values = example_values(SHAPES_EXAMPLES[3], GenerationConfig(), tmp_path)  # "place it in a box"
    assert state.prompt == SHAPES_EXAMPLES[3].prompt and all(s.filled for s in state.slots)
    assert values[1] == "none" and values[LAYOUT] == "auto" and values[LAYOUT + 10] == 0


def test_the_sigmagen_examples_place_subjects_by_box_3d_box_mask_and_background(tmp_path):
    """The shapes model's SIGMA-GEN examples fill the tables the Boxes tab draws and generates from; an example's
    mask is stored among the server's masks, under the name a drawn mask gets."""
    from sigma_studio.webui.guard import stored_mask

    gen = [e for e in SHAPES_EXAMPLES if e.title.startswith("SIGMA-GEN")]
    assert len(gen) == 3
    filled = [example_values(e, GenerationConfig(), tmp_path)[1][:LAYOUT] for e in gen]
    assert all(v[1] == "boxes" for v in filled)
    assert [len(v[3]) for v in filled] == [2, 1, 1] and [len(v[4]) for v in filled] == [0, 1, 0]
    (mask,) = filled[1][5]
    assert stored_mask(mask[0], tmp_path) is not None and mask[2] == "img1"
    assert filled[2][6].endswith("orange-circle-on-blue.png") and filled[0][6] is None


def test_the_canvas_shows_the_background_and_legible_captions(tmp_path):
    import numpy as np

    from sigma_studio.examples import IMAGES
    from sigma_studio.webui.display import CANVAS_SIDE

    rows = [[0.1, 0.5, 0.4, 0.9, "cat", "img1"]]
    plain = np.asarray(canvas_image(rows, CANVAS_SIDE))
    rocket = np.asarray(canvas_image(rows, CANVAS_SIDE, background=str(IMAGES / "rocket.jpg")))
    assert np.abs(rocket.astype(int) - plain).mean() > 20  # the background is drawn under the boxes
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a picture")
    assert np.array_equal(np.asarray(canvas_image(rows, CANVAS_SIDE, background=str(junk))), plain)
    tab = (plain[:, :, 0] > 200) & (plain[:, :, 1] < 80)  # the caption's tab, in the first box's red
    ys = np.nonzero(tab.any(axis=1))[0]
    caption_rows = [y for y in ys if tab[y].sum() > 40]  # rows of the tab wider than the outline
    assert len(caption_rows) >= 20  # the tab holds type about 22 px high on the 512 px canvas (13 px on screen)
