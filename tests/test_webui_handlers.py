"""Web UI handlers without a browser: generation with every layout input, uploads, errors, the Blocks build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")

from sigma_studio.examples import IMAGES  # noqa: E402
from sigma_studio.model.errors import InputError  # noqa: E402
from sigma_studio.webui import handlers as h  # noqa: E402
from sigma_studio.webui import placements as pl  # noqa: E402
from sigma_studio.webui.state import Slot, UIState, read_prompt  # noqa: E402

SETTINGS = dict(
    preset="auto", width=128, height=128, steps=3, cfg_text=4.0, cfg_img=2.0, cfg_low=0.0, cfg_high=1.0,
    renorm="text_channel", shift=3.0, seed=5, count=1, group_mask=True,
)  # fmt: skip


def state() -> UIState:
    st = UIState("", (Slot(str(IMAGES / "cat.jpg")), Slot(str(IMAGES / "astronaut.jpg"))))
    return read_prompt(st, "<subject>this cat <img1> with <id>her <img2> in a meadow")


def layout(kind="none", boxes=(), canny=None) -> h.LayoutInputs:
    return h.LayoutInputs(kind, canny, 100, 200, 0, None, None, [list(b) for b in boxes])


@pytest.mark.parametrize(
    "lay",
    [
        layout(),
        layout("canny", canny=str(IMAGES / "horse.png")),
        layout("boxes", boxes=[(0.1, 0.1, 0.5, 0.9, "cat", "")]),
        layout("boxes", boxes=[(0.0, 0.3, 0.5, 1.0, "cat", "img1"), (0.5, 0.0, 1.0, 1.0, "her", "img2")]),
    ],
    ids=["plain", "canny", "box-layout", "subjects"],
)
def test_generate_with_each_layout(tiny_pipe, tmp_path, lay):
    result = h.generate(tiny_pipe, state(), lay, dict(SETTINGS), tmp_path)
    path, seed = result.paths[0], result.seeds[0]
    assert Path(path).is_file() and seed == 5 and "seed" in result.info
    assert Path(path).parent == tmp_path and Path(path).name.startswith("sigma-")


def test_outputs_are_never_overwritten(tiny_pipe, tmp_path):
    a = h.generate(tiny_pipe, state(), layout(), dict(SETTINGS), tmp_path).paths[0]
    b = h.generate(tiny_pipe, state(), layout(), dict(SETTINGS), tmp_path).paths[0]
    assert a != b and len(list(tmp_path.glob("*.png"))) == 2


def test_box_assigned_to_an_empty_reference_is_a_clear_error(tiny_pipe, tmp_path):
    bad = layout(
        "boxes",
        boxes=[
            (0.0, 0.0, 0.5, 0.5, "cat", "img1"),
            (0.5, 0.5, 1.0, 1.0, "her", "img2"),
            (0.1, 0.1, 0.5, 0.5, "x", "img5"),
        ],
    )
    with pytest.raises(Exception, match="subject 3 is img5, which is not a given reference") as err:
        h.generate(tiny_pipe, state(), bad, dict(SETTINGS), tmp_path)
    assert isinstance(h.friendly(err.value), gr.Error)


def test_upload_problems(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_text("nope")
    assert h.upload_problem(str(IMAGES / "cat.jpg")) is None
    msg = h.upload_problem(str(bad))
    assert msg.startswith("Upload refused: x.png is not a readable image") and str(tmp_path) not in msg


def test_size_presets_respect_the_model_limit():
    assert h.size_of("auto", 0, 0, 1024) is None
    assert h.size_of("4:3", 0, 0, 1024) == (768, 1024)
    assert h.size_of("16:9", 0, 0, 128) == (64, 128)
    # a custom size is the CLI's --size: taken as it is (the pipeline refuses one it cannot make), never rescaled
    assert h.size_of("custom", 100, 70, 1024) == (70, 100)
    with pytest.raises(InputError, match="at least 1 pixel"):
        h.size_of("custom", 0, 0, 1024)
    with pytest.raises(InputError, match="width must be a whole number"):
        h.size_of("custom", 64.5, 64, 1024)


def test_send_to_references_fills_the_next_slot(tmp_path):
    st = h.send_to_references(UIState("a", (Slot(str(IMAGES / "cat.jpg")),)), str(IMAGES / "coffee.jpg"))
    assert [s.image for s in st.slots][1].endswith("coffee.jpg") and "<img2>" in st.prompt


def test_preview_html_lists_the_sequence():
    html = h.preview_html(state())
    assert html.index('data-name="img1"') < html.index('data-name="img2"')
    assert 'data-role="reference" data-tokens="&lt;subject&gt;"' in html


def test_build_demo(tiny_pipe, tmp_path):
    from sigma_studio.webui.blocks import build_demo
    from sigma_studio.webui.jobs import Jobs

    demo = build_demo(tiny_pipe, outputs=tmp_path, jobs=(jobs := Jobs()))
    assert isinstance(demo, gr.Blocks)
    stop = next(fn.fn for fn in demo.fns.values() if fn.name == "stop")
    assert stop(None)[0] == gr.update()  # no live job (it ended as Stop was clicked): its own message stays
    waiting = jobs.submit()
    assert stop(waiting)[0] == "**Cancelled** before it started: nothing was written"
    with jobs.slot(running := jobs.submit()):
        assert stop(running)[0] == "**Cancelling…**"


def test_box_rows_accept_dataframes_and_skip_incomplete_rows():
    import pandas as pd

    df = pd.DataFrame([[0.1, 0.2, 0.5, 0.9, "cat", "img1"], [0.2, None, 0.3, 0.4, "x", None]])
    assert pl.box_rows(df) == [[0.1, 0.2, 0.5, 0.9, "cat", "img1"]]
    assert pl.box_rows(None) == []


def test_box_references_follow_slot_moves():
    rows = [[0, 0, 1, 1, "a", "img1"], [0, 0, 1, 1, "b", "img3"]]
    assert [r[5] for r in pl.remap_box_refs(rows, {1: None, 2: 1, 3: 2})] == ["", "img2"]


def test_boxes_place_some_references_and_keep_the_others(tiny_pipe, tmp_path):
    one = layout("boxes", boxes=[(0.0, 0.3, 0.5, 1.0, "cat", "img1")])
    request = h.request_of(state(), one, h.GenerationConfig(size=(64, 64)), tiny_pipe.arch)
    assert [img.name for img in request.images] == ["img1", "img2", "identities", "spatial"]
    assert "Place these subjects in this cat with <id>her <img2> in a meadow" in request.model_text()
    half = layout("boxes", boxes=[(0.0, 0.3, 0.5, 1.0, "cat", "img1"), (0.5, 0.0, 1.0, 1.0, "x", "")])
    with pytest.raises(Exception, match="has no reference"):
        h.generate(tiny_pipe, state(), half, dict(SETTINGS), tmp_path)


def test_three_d_boxes_and_masks_place_subjects_like_the_cli(tiny_pipe, tmp_path):
    """A 3-D box row and a mask row become the same ControlSpec subjects the CLI's --subject takes; the slot
    renumbering follows every table; a placement without a reference is a clear error."""
    mask = tmp_path / "m.png"
    Image.fromarray(np.pad(np.full((20, 30), 255, np.uint8), ((30, 14), (4, 30)))).save(mask)
    solid = [[-0.3, 0.0, 3.0, 0.8, 1.0, 0.6, 20.0, "cat", "img1"]]
    lay = h.LayoutInputs("boxes", None, 100, 200, 0, None, None, [], None, solid, [[str(mask), "her", "img2"]])
    controls = h.controls_of(lay)
    assert controls.subjects == ("img1@box3d=-0.3,0.0,3.0,0.8,1.0,0.6,20.0", f"img2@mask={mask}")
    request = h.request_of(state(), lay, h.GenerationConfig(size=(64, 64)), tiny_pipe.arch)
    assert [img.name for img in request.images][-2:] == ["identities", "spatial"]
    assert "<img1>" not in request.model_text() and "<img2>" not in request.model_text()  # both placed as subjects
    spatial = np.asarray(request.images[-1].image)
    assert {10, 20} <= set(np.unique(spatial[..., 0])) and spatial[..., 2].max() > 0  # two routed, 3-D depth
    moved = pl.remap_placements(([], lay.boxes3d, lay.masks), {1: 2, 2: 1})
    assert moved[1][0][-1] == "img2" and moved[2][0][-1] == "img1"
    with pytest.raises(Exception, match="Mask her has no reference"):
        h.controls_of(h.LayoutInputs("boxes", None, 0, 0, 0, None, None, [], None, [], [[str(mask), "her", ""]]))


def test_the_mask_editor_gives_a_mask_and_the_canvas_draws_every_placement(tmp_path):
    from sigma_studio.model.errors import InputError
    from sigma_studio.webui.display import canvas_image, wireframe

    layer = np.zeros((32, 32, 4), np.uint8)
    layer[4:12, 6:20] = (255, 255, 255, 255)
    mask = np.asarray(pl.editor_mask({"background": None, "layers": [layer], "composite": None}))
    assert mask[8, 10] == 255 and mask[20, 20] == 0
    upload = np.zeros((32, 32, 3), np.uint8)
    upload[20:30, 20:30] = 255
    both = np.asarray(pl.editor_mask({"background": upload, "layers": [layer]}))
    assert both[8, 10] == both[25, 25] == 255
    with pytest.raises(InputError, match="The mask is empty"):
        pl.editor_mask({"background": None, "layers": [np.zeros((8, 8, 4), np.uint8)]})
    corners = wireframe([0.0, 0.0, 3.0, 1.0, 1.0, 1.0, 0.0], 512)
    assert corners.shape == (8, 2) and abs(corners[:, 0].mean() - 256) < 1  # a centred box projects centred
    assert wireframe([0.0, 0.0, 0.2, 1.0, 1.0, 1.0, 0.0], 512) is None  # behind the camera: not drawn
    Image.fromarray(mask).save(tmp_path / "m.png")
    plain = np.asarray(canvas_image([], 128))
    drawn = np.asarray(canvas_image([], 128, None, [[0.0, 0.0, 3.0, 1.0, 1.0, 1.0, 30.0, "", ""]],
                                    [[str(tmp_path / "m.png"), "", ""]]))  # fmt: skip
    assert (drawn != plain).any(axis=-1).sum() > 200


def test_the_mask_editor_follows_the_output_shape_until_something_is_drawn():
    fresh = pl.black_canvas()
    opaque = {"background": np.dstack([np.zeros((256, 256, 3), np.uint8), np.full((256, 256), 255, np.uint8)])}
    assert pl.editor_for_output(opaque, (64, 128)) is not None  # the browser sends the canvas back with its alpha
    wide = pl.editor_for_output(fresh, (576, 1024))  # a 16:9 output: a 256 x 144 canvas
    assert np.asarray(wide["background"]).shape == (144, 256, 3) and wide["layers"] == []
    assert pl.editor_for_output(wide, (576, 1024)) is None  # already that shape
    assert np.asarray(pl.editor_for_output(wide, None)["background"]).shape == (256, 256, 3)  # auto: square
    stroke = np.zeros((144, 256, 4), np.uint8)
    stroke[10:20, 10:20] = 255
    assert pl.editor_for_output({**wide, "layers": [stroke]}, None) is None  # a drawn mask is never thrown away
    upload = np.zeros((100, 300, 3), np.uint8)
    upload[40:60, 100:200] = 255
    assert pl.editor_for_output({"background": upload, "layers": []}, (64, 64)) is None  # an uploaded mask stays


def test_preview_shows_the_controls_the_request_carries(tiny_pipe):
    html = h.preview_html(state(), layout("canny", canny=str(IMAGES / "horse.png")), tiny_pipe.arch)
    assert html.index('data-name="img1"') < html.index('data-name="img2"') < html.index('data-name="canny"')
    assert (
        'data-role="canny" data-tokens="&lt;layout&gt;"' in html
        and 'following <mark class="tok">&lt;layout&gt;</mark>this layout' in html
    )
    bad = h.preview_html(UIState("a <img1> b <img2>", (Slot(str(IMAGES / "cat.jpg")), Slot())), None, tiny_pipe.arch)
    assert "sigma-preview not-ready" in bad and "&lt;img2&gt;" in bad and 'role="note"' in bad


@pytest.mark.parametrize("kind", ["plain", "canny", "subjects"])
def test_a_web_result_replays_bit_for_bit_with_sigma_generate_from(tiny_pipe, tmp_path, kind):
    from typer.testing import CliRunner

    from sigma_studio.cli.main import app

    lay = {
        "plain": layout(),
        "canny": layout("canny", canny=str(IMAGES / "horse.png")),
        "subjects": layout("boxes", boxes=[(0.0, 0.3, 0.5, 1.0, "cat", "img1"), (0.5, 0.0, 1.0, 1.0, "her", "img2")]),
    }[kind]
    settings = dict(SETTINGS, seed=-1)  # random: the seed actually used is what the record keeps
    result = h.generate(tiny_pipe, state(), lay, settings, tmp_path / "web")
    path, seed = result.paths[0], result.seeds[0]
    again = tmp_path / "again.png"
    result = CliRunner().invoke(app, ["generate", "--from", path, "--out", str(again), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["config"]["seed"] == seed and record["model"] == "tiny"
    assert not [w for w in record["warnings"] if "pixels differ" in w]
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(again)))


def test_cancel_stops_a_running_generation_and_a_waiting_one(tiny_pipe, tmp_path):
    from sigma_studio.webui.jobs import Cancelled, Jobs

    jobs = Jobs()
    running = jobs.submit()
    with pytest.raises(Cancelled):
        h.generate(tiny_pipe, state(), layout(), dict(SETTINGS), tmp_path, jobs=jobs, token=running,
                   progress=lambda *a: jobs.cancel(running))  # fmt: skip
    waiting = jobs.submit()
    jobs.cancel(waiting)  # cancelled while still in the queue: it never starts
    with pytest.raises(Cancelled):
        h.generate(tiny_pipe, state(), layout(), dict(SETTINGS), tmp_path, jobs=jobs, token=waiting)
    assert not list(tmp_path.glob("*.png"))


def test_a_job_is_started_only_once_it_reaches_the_queue():
    """The page's Stop says "Cancelled" at once for a job the server has not dispatched, "Cancelling" otherwise."""
    from sigma_studio.webui.jobs import Jobs

    jobs = Jobs()
    token = jobs.submit()
    assert not jobs.started(token) and jobs.cancel(token) == "queued"  # in the web server's queue: never starts
    other = jobs.submit()
    with jobs.slot(other):
        assert jobs.started(other) and not jobs.started(token)
        assert jobs.cancel(other) == "running"  # read under the lock that cancels it: it stops at its next step
    assert not jobs.started(other) and jobs.cancel(other) is None  # ended: nothing left to cancel


def test_several_images_per_run_take_consecutive_seeds(tiny_pipe, tmp_path):
    result = h.generate(tiny_pipe, state(), layout(), dict(SETTINGS, count=3, steps=2), tmp_path)
    assert result.seeds == [5, 6, 7] and len({Path(p).name for p in result.paths}) == 3
    assert [r["config"]["seed"] for r in result.records] == [5, 6, 7]


def test_large_uploads_are_downscaled_and_bombs_refused(tmp_path):
    from PIL import Image

    big = tmp_path / "big.png"
    Image.new("RGB", (6000, 3000), "red").save(big)
    path, message = h.prepare_upload(str(big), tmp_path / "uploads")
    assert Image.open(path).size == (4096, 2048) and "downscaled from 6000×3000" in message
    assert h.prepare_upload(str(IMAGES / "cat.jpg"), tmp_path / "uploads") == (str(IMAGES / "cat.jpg"), "")
    bad = tmp_path / "x.svg"
    bad.write_text("<svg/>")
    path, message = h.prepare_upload(str(bad), tmp_path / "uploads")
    assert path is None and message == "x.svg is not a readable image; use a PNG, JPEG or WebP picture"


def test_subjects_inserted_into_a_background_keep_its_pixels(tiny_pipe, tmp_path):
    from dataclasses import replace

    bg = tmp_path / "bg.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(bg)
    lay = replace(layout("boxes", boxes=[(0.0, 0.0, 0.5, 0.5, "cat", "img1"), (0.5, 0.5, 1.0, 1.0, "her", "img2")]),
                  background=str(bg))  # fmt: skip
    request = h.request_of(state(), lay, h.GenerationConfig(), tiny_pipe.arch)
    assert request.controls.background == str(bg) and request.size == (64, 64)  # the background's size
    result = h.generate(tiny_pipe, state(), lay, dict(SETTINGS), tmp_path)
    out, kept = np.asarray(Image.open(result.paths[0])), request.insertion.keep
    assert np.array_equal(out[kept], np.asarray(Image.open(bg))[kept])


def test_several_images_of_a_job_can_share_each_step(tiny_pipe, tmp_path, monkeypatch):
    """On a GPU a job's images run together (generate_batch); forced here on the CPU, they are the images the
    one-after-another path writes, with the same seeds and records."""
    request = h.request_of(state(), layout(), h.settings_config(dict(SETTINGS), tiny_pipe.arch.max_image_size),
                           tiny_pipe.arch)  # fmt: skip
    apart = h.run_request(tiny_pipe, request, tmp_path / "apart", count=3)
    from sigma_studio.webui import runs

    monkeypatch.setattr(runs, "batches", lambda runner, count: True)
    calls = []
    together = h.run_request(tiny_pipe, request, tmp_path / "together", count=3, progress=lambda *a: calls.append(a))
    assert together[2] == apart[2] == [5, 6, 7]  # seeds
    for a, b in zip(apart[0], together[0], strict=True):
        pa, pb = (np.asarray(Image.open(p), dtype=np.int16) for p in (a, b))
        assert np.abs(pa - pb).max() <= 1
    assert together[1] == apart[1]  # the records (each image's seed among them)
    assert calls[-1][0] == calls[-1][1] == 3 * SETTINGS["steps"]  # progress reaches the whole job's steps


def test_the_preview_shows_each_token_once_marked_in_the_text():
    import re

    html = h.preview_html(state())
    shown = re.sub(r"<[^>]+>", " ", html)  # the text a reader sees (attributes left out)
    assert shown.count("&lt;subject&gt;") == 1 and '<mark class="tok">&lt;subject&gt;</mark>' in html
    untokened = h.preview_html(UIState("a cat <img1>", (Slot(str(IMAGES / "cat.jpg")),)))
    assert "no token" in untokened  # an image without a token says so on its chip
