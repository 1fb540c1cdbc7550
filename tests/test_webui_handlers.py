"""Web UI handlers without a browser: generation with every layout input, uploads, errors, the Blocks build."""

from __future__ import annotations

from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from sigma_studio.examples import IMAGES  # noqa: E402
from sigma_studio.webui import handlers as h  # noqa: E402
from sigma_studio.webui.state import Slot, UIState, read_prompt  # noqa: E402

SETTINGS = dict(
    preset="auto", width=128, height=128, steps=3, cfg_text=4.0, cfg_img=2.0, cfg_low=0.0, cfg_high=1.0,
    renorm="text_channel", shift=3.0, seed=5, randomize=False, group_mask=True,
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
    path, info, seed = h.generate(tiny_pipe, state(), lay, dict(SETTINGS), tmp_path)
    assert Path(path).is_file() and seed == 5 and "seed" in info
    assert Path(path).parent == tmp_path and Path(path).name.startswith("sigma-")


def test_outputs_are_never_overwritten(tiny_pipe, tmp_path):
    a, _, _ = h.generate(tiny_pipe, state(), layout(), dict(SETTINGS), tmp_path)
    b, _, _ = h.generate(tiny_pipe, state(), layout(), dict(SETTINGS), tmp_path)
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
    with pytest.raises(Exception, match="pick a filled slot") as err:
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
    assert h.size_of("custom", 100, 70, 1024) == (64, 96)


def test_send_to_references_fills_the_next_slot(tmp_path):
    st = h.send_to_references(UIState("a", (Slot(str(IMAGES / "cat.jpg")),)), str(IMAGES / "coffee.jpg"))
    assert [s.image for s in st.slots][1].endswith("coffee.jpg") and "<img2>" in st.prompt


def test_preview_html_lists_the_sequence():
    html = h.preview_html(state())
    assert html.index('data-name="img1"') < html.index('data-name="img2"')
    assert 'data-tokens="&lt;subject&gt;"' in html


def test_build_demo(tiny_pipe, tmp_path):
    from sigma_studio.webui.blocks import build_demo

    demo = build_demo(tiny_pipe, outputs=tmp_path)
    assert isinstance(demo, gr.Blocks)


def test_box_rows_accept_dataframes_and_skip_incomplete_rows():
    import pandas as pd

    df = pd.DataFrame([[0.1, 0.2, 0.5, 0.9, "cat", "img1"], [0.2, None, 0.3, 0.4, "x", None]])
    assert h.box_rows(df) == [[0.1, 0.2, 0.5, 0.9, "cat", "img1"]]
    assert h.box_rows(None) == []


def test_box_references_follow_slot_moves():
    rows = [[0, 0, 1, 1, "a", "img1"], [0, 0, 1, 1, "b", "img3"]]
    assert [r[5] for r in h.remap_box_refs(rows, {1: None, 2: 1, 3: 2})] == ["", "img2"]


def test_every_reference_needs_a_box_once_boxes_place_subjects(tiny_pipe, tmp_path):
    one = layout("boxes", boxes=[(0.0, 0.3, 0.5, 1.0, "cat", "img1")])
    with pytest.raises(Exception, match="img2 has no box"):
        h.generate(tiny_pipe, state(), one, dict(SETTINGS), tmp_path)


def test_cancel_stops_a_running_generation(tiny_pipe, tmp_path):
    import threading

    flag = threading.Event()
    flag.set()
    with pytest.raises(h.Cancelled):
        h.generate(tiny_pipe, state(), layout(), dict(SETTINGS), tmp_path, cancel=flag)
    assert not list(tmp_path.glob("*.png"))
