"""An axe-core accessibility scan of the web UI in a real browser, in the light and the dark colour scheme.

axe-core's JavaScript comes from the ``axe-playwright-python`` package (the ``dev`` extra), which bundles
``axe.min.js``; the server and Chromium are those of tests/browser.py. Skipped where the package,
Playwright or Chromium is missing. Fails on any violation axe rates "serious" or "critical".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import browser as ui
from tests.browser import ART, STATE_TIMEOUT_MS

pytest.importorskip("gradio")
pytest.importorskip("playwright.sync_api")
axe_package = pytest.importorskip("axe_playwright_python", reason="pip install -e '.[dev]' (it bundles axe.min.js)")
pytestmark = ui.pytestmark
server, browser = ui.server, ui.browser  # the fixtures: one tiny-model server and one Chromium for this module

LOADED = "document.querySelector('.loading') === null && document.querySelector('h1, h2') !== null"
PHONE_LAYOUT = "getComputedStyle(document.querySelector('#run-row')).position === 'fixed'"
BLOCKING = ("serious", "critical")
# Every request the page sends, counted: started, and still in flight. A tab click starts a page event whose chained
# preview refresh starts only when it ends, so a page can look settled between the two; a scan is kept only when no
# request started while it ran (else an output dimmed mid-scan reads as low contrast).
COUNT_REQUESTS = """window.__sigmaStarted = 0; window.__sigmaInflight = 0;
const sigmaFetch = window.fetch;
window.fetch = (...args) => { window.__sigmaStarted++; window.__sigmaInflight++;
  return sigmaFetch(...args).finally(() => { window.__sigmaInflight--; }); };"""
MAX_SCANS = 20
# (rule id, CSS selector) pairs for nodes of Gradio's own markup that our CSS and layout cannot reach; a node of that
# rule is excused only when it matches the selector. Gradio 6's empty Image, File and Gallery placeholder (its Empty
# component) is a <div aria-label="Empty value"> without a role, which ARIA forbids; the div and its label come from
# Gradio's Svelte code. Its Dataframe (the 3-D boxes) scrolls in a <div role="none" class="virtual-table-viewport">
# that takes no focus, so a keyboard cannot scroll it when a phone's width makes it overflow.
GRADIO_OWN = (
    ("aria-prohibited-attr", 'div.empty[aria-label="Empty value"]:not([role])'),
    ("scrollable-region-focusable", 'div.virtual-table-viewport[role="none"]'),
)
EXCUSE = """([violations, excused]) => violations.map(v => ({...v, nodes: v.nodes.filter(n => !excused.some(
  ([rule, sel]) => rule === v.id && n.target.length === 1 && document.querySelector(n.target[0])?.matches(sel)))}))
  .filter(v => v.nodes.length > 0)"""


def _axe_source() -> str:
    return (Path(axe_package.__file__).parent / "axe.min.js").read_text(encoding="utf-8")


def _quiet_scan(pg) -> list[dict]:
    """axe's violations from a scan during which the page sent no request and ran no event: Gradio dims a running
    event's outputs, which axe reads as low contrast."""
    for _ in range(MAX_SCANS):
        ui.wait_settled(pg)
        pg.wait_for_function("window.__sigmaInflight === 0", timeout=STATE_TIMEOUT_MS)
        started = pg.evaluate("window.__sigmaStarted")
        violations = pg.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
        if pg.evaluate("window.__sigmaStarted") == started and pg.evaluate(f"({ui.SETTLED})()"):
            return violations
    raise AssertionError(f"the page never stayed quiet for a whole axe scan in {MAX_SCANS} tries")


def _scan(browser, url: str, scheme: str) -> list[dict]:
    """axe's violations in colour ``scheme``, less the nodes GRADIO_OWN excuses, over three views of one page: as
    loaded with both accordions open, on the Boxes tab, and at a phone's width; each violation names its view."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1200}, color_scheme=scheme)
    pg = ctx.new_page()
    pg.set_default_timeout(STATE_TIMEOUT_MS)
    pg.add_init_script(COUNT_REQUESTS)
    pg.goto(url)
    dark = "document.body.classList.contains('dark') || document.documentElement.classList.contains('dark')"
    pg.wait_for_function(dark if scheme == "dark" else f"!({dark})", timeout=STATE_TIMEOUT_MS)
    pg.wait_for_selector("#generate", state="visible", timeout=STATE_TIMEOUT_MS)
    pg.wait_for_selector("footer", state="visible", timeout=STATE_TIMEOUT_MS)
    pg.wait_for_function(LOADED, timeout=STATE_TIMEOUT_MS)
    _open_accordions(pg)
    pg.add_script_tag(content=_axe_source())
    pg.wait_for_function("typeof window.axe !== 'undefined'", timeout=STATE_TIMEOUT_MS)
    ART.mkdir(parents=True, exist_ok=True)
    found, everything = [], {}
    for view in ("page", "boxes", "phone"):
        if view == "boxes":
            pg.get_by_role("tab", name="Boxes").click()
            pg.wait_for_selector("#canvas img", state="visible", timeout=STATE_TIMEOUT_MS)
        elif view == "phone":  # the Generate bar is fixed to the bottom once the phone layout applies
            pg.set_viewport_size({"width": 390, "height": 844})
            pg.wait_for_function(PHONE_LAYOUT, timeout=STATE_TIMEOUT_MS)
        everything[view] = _quiet_scan(pg)
        found += [{**v, "view": view} for v in pg.evaluate(EXCUSE, [everything[view], [list(p) for p in GRADIO_OWN]])]
        pg.screenshot(path=str(ART / f"axe-{scheme}-{view}.png"), full_page=True)
    ctx.close()
    (ART / f"axe-{scheme}.json").write_text(json.dumps(everything, indent=1))  # every violation, excused ones too
    return found


def _open_accordions(pg) -> None:
    """Open "How to write a SIGMA prompt" and "Settings", so that axe sees what they hold too."""
    pg.locator("#how-to").get_by_text("How to write a SIGMA prompt", exact=True).first.click()
    pg.wait_for_selector("#how-to table", state="visible", timeout=STATE_TIMEOUT_MS)
    pg.locator("#settings").get_by_text("Settings", exact=True).first.click()
    pg.wait_for_selector("#steps input[type=number]", state="visible", timeout=STATE_TIMEOUT_MS)


def _report(violations: list[dict]) -> str:
    lines = []
    for v in violations:
        targets = [" ".join(map(str, n["target"])) for n in v["nodes"][:8]]
        summary = v["nodes"][0].get("failureSummary", "").replace("\n", " ")[:200]
        lines.append(f"{v['view']}: {v['id']} ({v['impact']}, {len(v['nodes'])} nodes): {targets} {summary}")
    return "\n".join(lines)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_serious_or_critical_violation(server, browser, scheme):
    violations = _scan(browser, server[0], scheme)
    print(f"\naxe, {scheme} scheme:\n{_report(violations) or 'no violations'}")
    blocking = [v for v in violations if v["impact"] in BLOCKING]
    assert not blocking, f"axe ({scheme}) found serious or critical violations:\n{_report(blocking)}"
