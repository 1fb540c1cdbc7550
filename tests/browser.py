"""The browser harness of the web UI's tests: ``python app.py`` on a free local port (the ``server`` and
``shapes_server`` fixtures), Debian's Chromium driven by Playwright (``browser``, ``page``), and the helpers that
act on the page and wait for its states (never a fixed sleep). A test module binds the fixtures it uses
(``server, browser = harness.server, harness.browser``) and its ``pytestmark`` (skipped where Playwright or
Chromium is missing; .ci/run installs both). Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
ART = REPO / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
STATE_TIMEOUT_MS = 180_000  # the ceiling of any one wait for a state of the page (never a fixed sleep)
# what an element shows, without the status text Gradio lays over an event's outputs while the event runs
SHOWN = """sel => { const el = document.querySelector(sel).cloneNode(true);
  el.querySelectorAll('[data-testid=status-tracker]').forEach(t => t.remove()); return el.textContent.trim(); }"""
# no event running: each status tracker Gradio lays over an event's outputs is hidden (idle or done) or shows its
# event's error (read by the assertion that follows the wait)
SETTLED = """() => [...document.querySelectorAll('[data-testid=status-tracker]')]
  .every(t => t.classList.contains('hide') || t.innerText.includes('Error'))"""
pytest.importorskip("gradio")
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from _serve("tiny", tmp_path_factory.mktemp("webui-out"))


@pytest.fixture(scope="module")
def shapes_server(tmp_path_factory):
    yield from _serve("shapes", tmp_path_factory.mktemp("webui-shapes"))


@pytest.fixture(scope="module")
def gated_server(tmp_path_factory):
    """The tiny model's server whose jobs wait while ``out / "gate"`` exists (tests/gated_app.py)."""
    out = tmp_path_factory.mktemp("webui-gated")
    yield from _serve("tiny", out, env={"SIGMA_TEST_GATE": str(out / "gate")}, script="tests/gated_app.py")


def _serve(model: str, out: Path, env: dict | None = None, script: str = "app.py"):
    """``python app.py --model MODEL`` on a free port, writing to ``out``; ``env``: variables to set for it."""
    port = free_port()
    log = open(out / "server.log", "w")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, script, "--model", model, "--port", str(port), "--outputs", str(out)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail((out / "server.log").read_text()[-3000:])
            if time.time() > deadline:
                proc.kill()
                pytest.fail(f"app.py did not listen on port {port} within 180 s: {(out / 'server.log').read_text()}")
            time.sleep(0.5)
    yield url, out
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
    playwright.expect.set_options(timeout=STATE_TIMEOUT_MS)  # expect()'s own default is 5 s
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=flags)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(server, browser):
    return _open(browser, server[0])


def _open(browser, url: str):
    ART.mkdir(parents=True, exist_ok=True)
    pg = browser.new_page(viewport={"width": 1400, "height": 1200})
    # every action waits for its element's state; under a load of 4 on 2 cores that can take far over Playwright's
    # default 30 s, so the ceiling is generous (a state that never comes still fails, only later)
    pg.set_default_timeout(STATE_TIMEOUT_MS)
    pg.goto(url)
    pg.wait_for_selector("#prompt textarea", timeout=STATE_TIMEOUT_MS)
    return pg


def upload(page, k: int, path: Path) -> None:
    with page.expect_file_chooser() as chooser:
        page.locator(f"#slot-upload-{k}").click()
    chooser.value.set_files(str(path))


def pick(page, k: int, token: str) -> None:
    box = page.locator(f"#slot-tokens-{k} input")
    box.click()
    box.fill(token)
    box.press("Enter")
    page.keyboard.press("Escape")


SELECTED_TAB_IS = "[...document.querySelectorAll('#layout-tabs [role=tab]')].some(t => "  # noqa: E501
SELECTED_TAB_IS += "t.getAttribute('aria-selected') === 'true' && t.innerText.includes('{}'))"


def chosen(k: int) -> str:
    """The tokens chosen for slot ``k``, as a page expression: the dropdown's chips only (its whole text also holds
    the option list while that is open, and the list names every token)."""
    return f"[...document.querySelectorAll('#slot-tokens-{k} .token')].map(t => t.innerText).join(' ')"


def wait_settled(page) -> None:
    """Wait until no event of the page runs (see :data:`SETTLED`)."""
    page.wait_for_function(f"({SETTLED})()", timeout=STATE_TIMEOUT_MS)


def prompt_text(page) -> str:
    return page.locator("#prompt textarea").input_value()


def _poll(done, every: float) -> None:
    """Check ``done()`` every ``every`` seconds until it holds or the harness's ceiling passes: the one polling loop,
    for states on the server's disk (a written file), which the page has no element for."""
    deadline = time.time() + STATE_TIMEOUT_MS / 1000
    while not done() and time.time() < deadline:
        time.sleep(every)


def wait_for_file(path: Path) -> bool:
    """Wait until the server has written ``path``; whether it is there."""
    _poll(path.exists, 0.2)
    return path.exists()


def wait_for_pngs(out: Path, more_than: int) -> list[Path]:
    """Wait until ``out`` holds more than ``more_than`` generated PNGs (the state on disk a generation leaves);
    returns them, however many there are when the ceiling passes (the caller's assertion says what was missing)."""
    _poll(lambda: len(list(out.glob("sigma-*.png"))) > more_than, 0.5)
    return sorted(out.glob("sigma-*.png"))
