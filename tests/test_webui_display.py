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
    tab, kind, canny, rows = values[:4]
    assert kind == "boxes" and rows == [[0.1, 0.2, 0.5, 0.9, "cat", ""]]
    preset, width, height, steps = values[4:8]
    assert (preset, width, height, steps) == ("custom", 96, 64, 7) and values[14] == 42
    assert history_entry("x.png", record)["caption"].startswith("seed 42 · a <style>look")


def test_examples_fill_every_field():
    state, values = example_values(SHAPES_EXAMPLES[3], GenerationConfig())  # "place it in a box"
    assert state.prompt == SHAPES_EXAMPLES[3].prompt and all(s.filled for s in state.slots)
    assert values[1] == "none" and values[4] == "auto" and values[14] == 0


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
