"""The page's inputs in a real browser, as a user works them: every way of editing the prompt (a real clipboard's
paste and cut, Backspace, Delete, ``fill``), a corrupt file dropped on every input that takes one, the Generate
button on a phone, and the depth tab on a server without the depth model (the server, browser and helpers of
tests/browser.py; this module's server is offline, with an empty Hugging Face cache)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import browser as ui
from tests.browser import ART, REPO, SHOWN, STATE_TIMEOUT_MS, chosen, upload

pytest.importorskip("gradio")
pytest.importorskip("playwright.sync_api")
pytestmark = ui.pytestmark
browser = ui.browser  # the fixture: one Chromium for this module
CAT = REPO / "examples" / "images" / "cat.jpg"
PHONE = {"width": 390, "height": 844}
# (2 px of slack: a scrolled-to element may sit a fraction of a pixel above the top)
IN_VIEW = """sel => { const r = document.querySelector(sel).getBoundingClientRect();
  return r.height > 0 && r.top >= -2 && r.bottom <= window.innerHeight + 2; }"""
# a file dropped as a user drops one: dragenter, dragover and drop on the element, the file in their DataTransfer
DROP = """([sel, name, bytes]) => {
  const data = new DataTransfer();
  data.items.add(new File([new Uint8Array(bytes)], name, {type: 'image/jpeg'}));
  const target = document.querySelector(sel);
  for (const type of ['dragenter', 'dragover', 'drop'])
    target.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: data}));
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("webui-inputs")
    (out / "hf-home").mkdir()  # an empty Hugging Face cache, offline: no depth model
    yield from ui._serve("tiny", out, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(out / "hf-home")})


def _page(browser, url: str, **context):
    """A fresh page in its own context (a clipboard of its own, which the page may read and write)."""
    ctx = browser.new_context(
        viewport=context.pop("viewport", {"width": 1400, "height": 1200}),
        permissions=["clipboard-read", "clipboard-write"],
        **context,
    )
    pg = ctx.new_page()
    pg.set_default_timeout(STATE_TIMEOUT_MS)
    pg.goto(url)
    pg.wait_for_selector("#prompt textarea", timeout=STATE_TIMEOUT_MS)
    return pg


def _wait(pg, condition: str) -> None:
    pg.wait_for_function(condition, timeout=STATE_TIMEOUT_MS)


def _settings(pg, steps: int, count: int) -> None:
    pg.locator("#settings").get_by_text("Settings", exact=True).first.click()
    for name, value in (("steps", steps), ("count", count)):
        pg.locator(f"#{name} input[type=number]").fill(str(value))
        pg.locator(f"#{name} input[type=number]").press("Enter")


def _generate(pg, out: Path) -> list[str]:
    """Generate; once the page shows the result (or an error), the prompts recorded in the PNGs it wrote."""
    from sigma_studio.model.request.record import read_record

    before, info = set(out.glob("sigma-*.png")), pg.evaluate(SHOWN, "#info")
    pg.locator("#generate").click()
    # the result's report, or a message: a pending event's status text is no state of the page
    _wait(pg, f"document.querySelector('#page-error .sigma-error') !== null || "
              f"(({SHOWN})('#info') !== {info!r} && ({SHOWN})('#info').includes('seed'))")  # fmt: skip
    said = f"the page said {pg.locator('#page-error').inner_text()!r} / {pg.locator('#info').inner_text()!r}"
    assert pg.locator("#page-error").inner_text().strip() == "", said
    written = sorted(set(out.glob("sigma-*.png")) - before)
    assert written, said
    return [read_record(path).prompt for path in written]


def _preview_has(text: str) -> str:
    return f"document.querySelector('#preview').innerText.includes({text!r})"


def test_pasted_text_is_what_generate_runs(server, browser):
    """Paste into the empty prompt and Generate: the PNGs' records hold the pasted text; a typed ``<img5>`` taken
    out again with Backspace leaves no error behind."""
    url, out = server
    pg = _page(browser, url)
    box = pg.locator("#prompt textarea")
    pg.evaluate("navigator.clipboard.writeText('a red star')")
    box.click()
    pg.keyboard.press("ControlOrMeta+V")
    _wait(pg, _preview_has("a red star"))
    _settings(pg, steps=2, count=2)
    assert _generate(pg, out) == ["a red star"] * 2
    box.press("End")
    box.press_sequentially(" <img5>")
    _wait(pg, "document.querySelector('#page-error').innerText.includes('img5')")
    for _ in " <img5>":
        box.press("Backspace")
    _wait(pg, "document.querySelector('#page-error').innerText.trim() === ''")
    assert box.input_value() == "a red star"
    assert _generate(pg, out) == ["a red star"] * 2
    pg.screenshot(path=str(ART / "13-pasted-prompt.png"), full_page=True)
    pg.context.close()


def test_delete_cut_paste_and_fill_update_the_slots_and_the_preview(server, browser):
    url, out = server
    pg = _page(browser, url)
    upload(pg, 0, CAT)
    _wait(pg, "document.querySelector('#prompt textarea').value.includes('<img1>')")
    box, tokens = pg.locator("#prompt textarea"), pg.locator("#slot-tokens-0 .token")  # the chosen tokens' chips
    box.fill("a cat <style>like <img1>")
    _wait(pg, f"{chosen(0)}.includes('<style>')")
    _wait(pg, _preview_has("a cat"))
    box.press("Home")
    box.press("Delete")
    box.press("Delete")  # "cat <style>like <img1>"
    _wait(pg, "document.querySelector('#preview .seg-text').innerText.trim().startsWith('cat')")
    box.press("ControlOrMeta+A")
    box.press("ControlOrMeta+X")  # cut: the box is empty, the text on the clipboard
    _wait(pg, f"!{chosen(0)}.includes('<style>')")
    assert box.input_value() == "" and pg.evaluate("navigator.clipboard.readText()") == "cat <style>like <img1>"
    box.press("ControlOrMeta+V")
    _wait(pg, f"{chosen(0)}.includes('<style>')")
    box.fill("<subject>a cat <img1> on a mat")
    _wait(pg, f"{chosen(0)}.includes('<subject>')")
    _wait(pg, _preview_has("on a mat"))
    assert not any("<style>" in chip for chip in tokens.all_inner_texts())
    _settings(pg, steps=2, count=1)
    assert _generate(pg, out) == ["<subject>a cat <img1> on a mat"]
    pg.context.close()


# every input that takes a picture: (the layout tab it is on, its element)
FILE_INPUTS = [(None, "slot-image-0"), ("Canny", "canny"), ("Depth", "depth-image"), ("Depth", "depth-map"),
               ("Boxes", "background"), ("Boxes", "mask-draw")]  # fmt: skip


def test_a_corrupt_file_dropped_on_any_input_is_refused_like_an_upload(server, browser):
    """Random bytes named .jpg, dropped on each drop area in turn: each time one "Upload refused" message names the
    file, and the page keeps its layout (the prompt shown, no Error badge); the server logs no processing error."""
    url, out = server
    pg = _page(browser, url)
    for tab, elem in FILE_INPUTS:
        if tab:
            pg.get_by_role("tab", name=tab).click()
        name = f"broken-{elem}.jpg"
        pg.locator(f"#{elem} [aria-dropeffect]").first.wait_for(timeout=STATE_TIMEOUT_MS)
        pg.evaluate(DROP, [f"#{elem} [aria-dropeffect]", name, list(os.urandom(3000))])
        try:
            _wait(pg, f"document.querySelector('#page-error').innerText.includes('Upload refused: {name}')")
        except ui.playwright.Error:
            pg.screenshot(path=str(ART / "14-corrupt-drop-failed.png"), full_page=True)
            raise
        assert pg.locator("#page-error .sigma-error").count() == 1, pg.locator("#page-error").inner_text()
        assert "not a readable image" in pg.locator("#page-error").inner_text()
        ui.wait_settled(pg)  # the drop's follow-up events done: an Error badge would be up by now
        assert pg.get_by_text("Error", exact=True).count() == 0, f"Error badges after a drop on #{elem}"
        assert pg.locator("#prompt textarea").is_visible()
    pg.screenshot(path=str(ART / "14-corrupt-drop.png"), full_page=True)
    assert "ComponentProcessingError" not in (out / "server.log").read_text()
    pg.context.close()


def test_every_refusal_lands_in_the_one_error_box_never_a_pop_up(server, browser, tmp_path):
    """A text file through the Upload button, and "Send to references" before anything was made: each message is
    in the box under Generate (as every other refusal), none in a Gradio pop-up; the preview's own "not ready"
    line is a note, not a second red error."""
    url, _ = server
    pg = _page(browser, url)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    ui.upload(pg, 0, notes)
    _wait(pg, "document.querySelector('#page-error').innerText.includes('Upload refused: notes.txt')")
    pg.locator("#send").click()
    _wait(pg, "document.querySelector('#page-error').innerText.includes('Generate an image first')")
    ui.wait_settled(pg)  # the click's events done: a pop-up would be up by now
    assert pg.locator(".toast-body").count() == 0, pg.locator(".toast-body").all_inner_texts()
    pg.locator("#prompt textarea").fill("a cat <img1>")  # img1 has no picture: the preview says why, as a note
    _wait(pg, "document.querySelector('#preview .not-ready') !== null")
    assert pg.locator("#preview .sigma-error").count() == 0
    pg.context.close()


def test_generate_stays_in_reach_on_a_phone(server, browser):
    """At phone width Generate stays on the screen while the page scrolls, and after tapping an example the page
    is back at the prompt, with Generate in view. Tapping Generate brings the Result (its progress, then the picture)
    into view; a refusal brings the page back to its message under the prompt."""
    url, out = server
    pg = _page(browser, url, viewport=PHONE, has_touch=True, is_mobile=True)
    pg.mouse.wheel(0, 900)
    _wait(pg, "window.scrollY >= 800")
    assert pg.evaluate(IN_VIEW, "#generate"), pg.locator("#generate").bounding_box()
    pg.screenshot(path=str(ART / "15-phone-scrolled.png"))
    example = pg.locator("#examples button.example").first
    example.scroll_into_view_if_needed()
    example.tap()
    _wait(pg, "document.querySelector('#prompt textarea').value.trim() !== ''")
    _wait(pg, f"({IN_VIEW})('#prompt textarea') && ({IN_VIEW})('#generate')")
    pg.screenshot(path=str(ART / "15-phone-example.png"))
    _settings(pg, steps=2, count=1)
    before = set(out.glob("sigma-*.png"))
    pg.locator("#generate").tap()
    _wait(pg, "document.querySelector('#info').innerText.includes('seed')")
    assert set(out.glob("sigma-*.png")) - before
    _wait(pg, f"document.querySelector('#output img') !== null && ({IN_VIEW})('#output')")
    _wait(pg, f"document.querySelector('#generate') !== null && ({IN_VIEW})('#generate')")  # Stop is Generate again
    pg.screenshot(path=str(ART / "15-phone-result.png"))
    pg.locator("#prompt textarea").fill("a cat <img5>")  # a refusal: its message is under the prompt, far above
    pg.locator("#generate").tap()
    error = "#page-error .sigma-error"
    _wait(pg, f"document.querySelector({error!r}) !== null && ({IN_VIEW})({error!r})")
    pg.context.close()


def test_the_depth_tab_without_the_depth_model_asks_for_a_ready_map(server, browser):
    """Offline without the depth model: the tab says what it needs, the preview promises no depth part for a
    picture, Generate says it once in plain words, and a ready depth map is taken."""
    url, _ = server
    pg = _page(browser, url)
    pg.locator("#prompt textarea").press_sequentially("a house by a lake")
    pg.get_by_role("tab", name="Depth").click()
    pg.locator("#depth-image input[type=file]").set_input_files(str(CAT))
    depth_part = "document.querySelector('#preview [data-role=depth]') !== null"
    _wait(pg, f"{depth_part} || {_preview_has('sigma download depth')}")
    pg.screenshot(path=str(ART / "16-depth-offline.png"), full_page=True)
    assert pg.locator("#preview [data-role=depth]").count() == 0, "the preview promises a depth part"
    assert "ready depth map" in pg.locator("#preview").inner_text()
    _wait(pg, "document.querySelector('#depth-note').innerText.includes('sigma download depth')")  # its own event
    pg.locator("#generate").click()
    _wait(pg, "document.querySelector('#page-error').innerText.includes('depth')")
    said = pg.locator("#page-error").inner_text()
    assert said.count("a ready depth map") == 1 and "sigma download depth" in said, said
    pg.locator("#depth-map input[type=file]").set_input_files(str(CAT))  # any picture stands for a ready map
    _wait(pg, depth_part)
    pg.context.close()


def test_a_downscaled_upload_is_a_note_and_the_only_slot_cannot_move_up(server, browser, tmp_path):
    """A picture over 4096 px is taken, downscaled, with a note that is no error; img1 has no "move up"."""
    from PIL import Image

    url, _ = server
    wide = tmp_path / "wide.png"
    Image.new("RGB", (4200, 64), "teal").save(wide)
    pg = _page(browser, url)
    pg.wait_for_selector("#slot-remove-0", state="visible", timeout=STATE_TIMEOUT_MS)
    assert not pg.locator("#slot-up-0").is_visible(), "the only slot offers to move up"
    upload(pg, 0, wide)
    _wait(pg, "document.querySelector('#page-error').innerText.includes('downscaled')")
    assert pg.locator("#page-error .sigma-note").count() == 1 and pg.locator("#page-error .sigma-error").count() == 0
    assert "<img1>" in pg.locator("#prompt textarea").input_value()  # taken, not refused
    pg.locator("#add-slot").click()
    pg.wait_for_selector("#slot-up-1", state="visible", timeout=STATE_TIMEOUT_MS)  # img2 can move up
    pg.context.close()


def test_option_words_never_say_a_thing_twice():
    """The page's words for a CLI hint that already names the thing ("pass a ready depth map with --depth-map")."""
    from sigma_studio.webui.display import browser_text

    said = browser_text("not in the cache at /srv/hf, and the hub cannot be reached: run `sigma download depth` "
                        "where there is network access, or pass a ready depth map with --depth-map")  # fmt: skip
    assert said.endswith("or upload a ready depth map") and said.count("ready depth map") == 1, said
