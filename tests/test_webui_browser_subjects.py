"""SIGMA-GEN subjects in a real browser: a 3-D box and a drawn mask place a subject, and the mask editor takes the
output's shape (the server, browser and helpers of tests/browser.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import browser as ui
from tests.browser import ART, REPO, STATE_TIMEOUT_MS, _open, upload

pytest.importorskip("gradio")
pytest.importorskip("playwright.sync_api")
pytestmark = ui.pytestmark
server, browser = ui.server, ui.browser  # the fixtures: one tiny-model server and one Chromium for this module


def _subject_page(browser, server):
    """A fresh page with the cat as img1, on the Boxes tab with img1 as the next placement's reference."""
    pg = _open(browser, server[0])
    upload(pg, 0, REPO / "examples" / "images" / "cat.jpg")
    pg.wait_for_function(
        "document.querySelector('#prompt textarea').value.includes('<img1>')", timeout=STATE_TIMEOUT_MS
    )
    pg.get_by_role("tab", name="Boxes").click()
    choice = pg.locator("#box-ref input")
    choice.click()
    choice.fill("img1")
    choice.press("Enter")
    pg.keyboard.press("Escape")
    return pg


def _generate_a_few_steps(pg, out: Path) -> None:
    before = len(list(out.glob("sigma-*.png")))
    if not pg.locator("#steps input[type=number]").is_visible():
        pg.locator("#settings").get_by_text("Settings", exact=True).first.click()
    pg.locator("#steps input[type=number]").fill("3")
    pg.locator("#steps input[type=number]").press("Enter")
    pg.locator("#generate").click()
    ui.wait_for_pngs(out, before)
    ui.wait_settled(pg)  # the PNG is written before the event returns and the page shows its report
    assert len(list(out.glob("sigma-*.png"))) == before + 1
    assert pg.locator("#page-error").inner_text().strip() == "", pg.locator("#page-error").inner_text()
    assert "Error" not in pg.locator("#info").inner_text()


SPATIAL_IN_PREVIEW = "document.querySelector('#preview [data-role=spatial]') !== null"


def test_a_three_d_box_places_a_subject_and_draws_its_wireframe(server, browser):
    pg = _subject_page(browser, server)
    canvas = pg.locator("#canvas img")
    before = canvas.get_attribute("src")
    pg.locator("#add-box3d").click()
    pg.wait_for_function("document.querySelector('#boxes3d').innerText.includes('img1')", timeout=STATE_TIMEOUT_MS)
    pg.wait_for_function(f"document.querySelector('#canvas img').src !== {before!r}", timeout=STATE_TIMEOUT_MS)
    pg.wait_for_function(SPATIAL_IN_PREVIEW, timeout=STATE_TIMEOUT_MS)
    assert "<img1>" not in pg.locator("#preview").inner_text()  # the cat left the prompt for the identity sheet
    pg.screenshot(path=str(ART / "10-box3d.png"), full_page=True)
    _generate_a_few_steps(pg, server[1])
    pg.close()


def _draw_and_add_mask(pg, out: Path):
    """A white stroke across the mask editor, added as a mask subject; returns the saved mask as a bool array."""
    import numpy as np
    from PIL import Image

    editor = pg.locator("#mask-draw")
    editor.scroll_into_view_if_needed()
    editor.locator("button[aria-label='Brush']").first.click()
    area = editor.locator("canvas").first.bounding_box()
    x, y = area["x"] + area["width"] * 0.45, area["y"] + area["height"] * 0.4
    pg.mouse.move(x, y)
    pg.mouse.down()
    for k in range(12):  # a thick white stroke across the middle of the black picture
        pg.mouse.move(x + 8 * k, y + 4 * k, steps=3)
    pg.mouse.up()
    pg.locator("#add-mask").click()
    pg.wait_for_function("document.querySelector('#masks').innerText.includes('mask-')", timeout=STATE_TIMEOUT_MS)
    pg.wait_for_function(SPATIAL_IN_PREVIEW, timeout=STATE_TIMEOUT_MS)
    masks = sorted((out / "uploads").glob("mask-*.png"), key=lambda p: p.stat().st_mtime)
    return np.asarray(Image.open(masks[-1]).convert("L")) > 127


def test_a_drawn_mask_places_a_subject(server, browser):
    pg = _subject_page(browser, server)
    drawn = _draw_and_add_mask(pg, server[1])
    pg.screenshot(path=str(ART / "11-mask.png"), full_page=True)
    assert 0 < drawn.sum() < drawn.size // 2  # the stroke, not the page
    _generate_a_few_steps(pg, server[1])
    pg.close()


def test_the_mask_editor_takes_the_shape_of_a_wide_output(server, browser):
    """With a 16:9 size chosen first, the mask is drawn at the output's shape, so it places the subject (a square
    mask would be refused as another shape than the output)."""
    from sigma_studio.webui.handlers import size_of

    pg = _subject_page(browser, server)
    pg.locator("#settings").get_by_text("Settings", exact=True).first.click()
    pg.locator("#preset input").click()
    pg.get_by_role("option", name="16:9", exact=True).click()
    pg.wait_for_function("document.querySelector('#preset input').value === '16:9'", timeout=STATE_TIMEOUT_MS)
    max_side = int(pg.locator("#settings input[type=number]").first.input_value() or 0)
    h, w = size_of("16:9", 0, 0, max_side)
    side = round(256 * h / w)  # the editor's picture: 256 px on the long edge, the output's shape
    pg.wait_for_function(
        f"document.querySelector('#mask-draw').innerText.includes('256x{side}')", timeout=STATE_TIMEOUT_MS
    )
    drawn = _draw_and_add_mask(pg, server[1])
    assert drawn.any() and abs(drawn.shape[1] / drawn.shape[0] - w / h) < 0.02, drawn.shape
    pg.screenshot(path=str(ART / "12-mask-wide.png"), full_page=True)
    _generate_a_few_steps(pg, server[1])
    pg.close()
