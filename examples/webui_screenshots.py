"""Redraw the web UI's screenshots in docs/ from a live server on the shapes model, as a user would make them.

    python examples/webui_screenshots.py [--chromium /usr/bin/chromium]

- docs/webui.png: the desktop page (1400 px wide, the whole page) after clicking the first example and Generate.
- docs/webui-shapes.png: the desktop view after the "Select one object" example.
- docs/webui-phone.png: a phone (390 x 844) after tapping the first example and Generate: the Result in view, the
  Generate bar at the bottom.

The examples' own seeds are used (seed 0 unless an example sets one); nothing is chosen by hand. Needs gradio and
playwright (the dev extra) and a Chromium.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
WAIT_MS = 180_000  # a ceiling for each state the page must reach, never an expected time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(out: Path) -> str:
    """The shapes model's web server, started as ``sigma webui`` starts it, in this process."""
    from sigma_studio.examples import ROOT as EXAMPLES
    from sigma_studio.model import load_pipeline
    from sigma_studio.webui.blocks import CSS, build_demo
    from sigma_studio.webui.jobs import Jobs
    from sigma_studio.webui.limits import WebLimits
    from sigma_studio.webui.server import launch

    pipe, jobs, limits = load_pipeline("shapes"), Jobs(1), WebLimits()
    demo = build_demo(pipe, outputs=out, jobs=jobs, limits=limits)
    port = free_port()
    launch(demo, pipe, outputs=out, jobs=jobs, limits=limits, port=port, quiet=True, css=CSS, allowed_paths=[EXAMPLES])
    return f"http://127.0.0.1:{port}/"


def generate_example(pg, k: int, *, tap: bool = False) -> None:
    """Click example ``k`` then Generate, and wait for the picture and its report."""
    button = pg.locator("#examples button.example").nth(k)
    button.tap() if tap else button.click()
    pg.wait_for_function("document.querySelector('#prompt textarea').value.trim() !== ''", timeout=WAIT_MS)
    before = pg.evaluate("document.querySelector('#info').innerText")
    generate = pg.locator("#generate")
    generate.tap() if tap else generate.click()
    pg.wait_for_function(
        f"document.querySelector('#info').innerText !== {before!r} && "
        "document.querySelector('#info').innerText.includes('seed') && document.querySelector('#output img')",
        timeout=WAIT_MS,
    )
    pg.wait_for_selector("#generate", state="visible", timeout=WAIT_MS)  # Stop is Generate again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from sigma_studio.model.files import atomic_write  # (a run cut short leaves the committed pictures whole)

    out = Path(tempfile.mkdtemp(prefix="sigma-screens-"))
    url = serve(out)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"])
        desktop = browser.new_page(viewport={"width": 1400, "height": 1150})
        desktop.goto(url)
        desktop.wait_for_selector("#examples button.example", timeout=WAIT_MS)
        generate_example(desktop, 0)
        atomic_write(DOCS / "webui.png", lambda f: f.write(desktop.screenshot(full_page=True)))
        generate_example(desktop, 2)
        desktop.evaluate("window.scrollTo(0, 0)")
        atomic_write(DOCS / "webui-shapes.png", lambda f: f.write(desktop.screenshot()))
        phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True).new_page()
        phone.goto(url)
        phone.wait_for_selector("#examples button.example", timeout=WAIT_MS)
        generate_example(phone, 0, tap=True)
        phone.wait_for_function(
            "(() => { const r = document.querySelector('#output').getBoundingClientRect(); "
            "return r.top >= 0 && r.top < window.innerHeight / 2; })()",
            timeout=WAIT_MS,
        )
        atomic_write(DOCS / "webui-phone.png", lambda f: f.write(phone.screenshot()))
        browser.close()
    shutil.rmtree(out, ignore_errors=True)
    print("redrawn: docs/webui.png, docs/webui-shapes.png, docs/webui-phone.png")


if __name__ == "__main__":
    main()
