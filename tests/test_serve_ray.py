"""``sigma serve --ray`` on a local Ray cluster: two CPU replicas of the shapes model behind one ingress.

Run as a user runs it (the command in a subprocess, which starts the cluster and stops it on Ctrl-C), then called
with the official ``openai`` client: each of 8 concurrent clients gets its own seed's picture, pixel for pixel the
pipeline's; both replicas do work; a replica killed mid-run has its requests retried on the other or failed in one
line, never hung, and the server goes on serving. Also the page's named API through the same ingress.

Marked ``ray`` (Ray's start-up is 20 to 40 s on a small machine), so the plain ``pytest`` leaves it out; CI runs it in
its own step after ``pip install -e '.[serve]'``: ``pytest -m ray tests/test_serve_ray.py``.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.serve")
pytest.importorskip("gradio")
openai = pytest.importorskip("openai")

import httpx  # noqa: E402
from PIL import Image  # noqa: E402

from tests.conftest import free_port, wait_until  # noqa: E402
from tests.test_webui_openai import FAST, pipeline_picture  # noqa: E402

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]
SHAPES = REPO / "examples" / "shapes"
START_TIMEOUT = 300  # seconds for the cluster, the two replicas and the ingress to come up on a loaded 2-core machine
CALL_TIMEOUT = 300  # the most one call may take; a hung call fails the test here instead of hanging CI
REPLICA = "ray::ServeReplica:sigma:SigmaReplica"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(URL, outputs, the server process) of ``sigma serve --ray --model shapes --replicas 2``."""
    out = tmp_path_factory.mktemp("ray-serve")
    port = free_port()
    command = [sys.executable, "-m", "sigma_studio.cli", "serve", "--ray", "--model", "shapes", "--replicas", "2",
               "--replica-cpus", "1", "--port", str(port), "--outputs", str(out / "outputs")]  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": "", "COLUMNS": "200"}  # a cluster of its own, even where one is running
    log = (out / "serve.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: "Serving shapes on Ray" in (out / "serve.log").read_text() or server.poll() is not None,
                   START_TIMEOUT, "the Ray deployment to come up")  # fmt: skip
        assert server.poll() is None, (out / "serve.log").read_text()[-3000:]
        yield url, out / "outputs", server
    finally:
        server.send_signal(signal.SIGINT)  # as Ctrl-C: the deployment and the cluster it started shut down
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        for pid in replica_pids(server.pid, everything=True):  # nothing of the cluster is left behind
            os.kill(pid, signal.SIGKILL)
        log.close()


def replica_pids(session: int, everything: bool = False) -> list[int]:
    """The replica processes (or every Ray process) the server started: its session's, by their process title."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if os.getsid(int(entry.name)) != session or int(entry.name) == session:
                continue
        except OSError:
            continue
        if title.startswith(REPLICA) or (everything and ("ray" in title or "raylet" in title)):
            pids.append(int(entry.name))
    return pids


def picture(item) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(item.b64_json))).convert("RGB"))


def status(url: str) -> dict:
    return httpx.get(url + "/api/v1/status", timeout=60).json()


@pytest.fixture(scope="module")
def shapes_pipe():
    from sigma_studio.model import load_pipeline

    return load_pipeline("shapes")


def test_edits_with_two_references_make_the_blue_triangle(served, shapes_pipe):
    with openai.OpenAI(base_url=served[0] + "/v1", api_key="-", max_retries=0, timeout=CALL_TIMEOUT) as client:
        assert [m.id for m in client.models.list().data] == ["shapes"]
        with (SHAPES / "yellow-triangle.png").open("rb") as a, (SHAPES / "blue-circle.png").open("rb") as b:
            prompt = "Draw the <subject>shape <img1> in the <style>colour of <img2>."
            result = client.images.edit(model="shapes", image=[a, b], prompt=prompt, extra_body={"seed": 0})
    from sigma_studio.model.shapes.evaluate import read

    record = result.data[0].model_extra["record"]
    assert record["config"]["seed"] == 0
    assert [img["name"] for img in record["images"] if img["role"] == "reference"] == ["img1", "img2"]
    reading = read(Image.fromarray(picture(result.data[0])))
    assert (reading.shape, reading.colour) == ("triangle", "blue")  # the README's call, served by a replica


def test_eight_concurrent_clients_each_get_their_seeds_picture_on_both_replicas(served, shapes_pipe):
    url = served[0]
    before = sum(status(url)["runs"].values())

    def call(seed: int) -> np.ndarray:
        with openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0, timeout=CALL_TIMEOUT) as client:
            result = client.images.generate(prompt="a green square", size="64x64", extra_body={"seed": seed, **FAST})
        return picture(result.data[0])

    seeds = list(range(40, 48))
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(call, seeds))
    for seed, image in zip(seeds, got, strict=True):
        direct = pipeline_picture(shapes_pipe, "a green square", seed)
        assert np.abs(image.astype(int) - direct.astype(int)).max() <= 1, seed
    runs = status(url)["runs"]
    assert sum(runs.values()) == before + 8 and len(runs) == 2 and min(runs.values()) > 0, runs


def test_the_pages_named_api_runs_through_the_ingress(served):
    from gradio_client import Client

    client = Client(served[0], verbose=False)
    images, records = client.predict("a red circle", [], seed=9, count=1, size="64x64", **FAST, api_name="/generate")
    assert len(images) == 1 and records[0]["config"]["seed"] == 9
    assert Image.open(images[0]).size == (64, 64)


def test_a_replica_killed_mid_run_has_its_requests_retried_or_failed_never_hung(served):
    url, outputs, server = served
    before = set(outputs.glob("*.png"))

    def call(seed: int):
        with openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0, timeout=CALL_TIMEOUT) as client:
            try:
                result = client.images.generate(prompt="a red star", size="64x64",
                                                extra_body={"seed": seed, "steps": 1000})  # fmt: skip
            except openai.APIStatusError as exc:
                return exc.status_code, exc.body
            return 200, result.data[0].model_extra["record"]["config"]["seed"]

    victims = replica_pids(server.pid)
    assert len(victims) == 2, victims
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(call, seed) for seed in range(4)]
        # every request has reached the server: in flight there, or already answered (on a loaded machine the first
        # can finish before the last arrives, so "four in flight at once" may never be seen; 1 000 steps make that rare)
        arrived = lambda: status(url)["live"] + sum(f.done() for f in futures) >= 4  # noqa: E731
        wait_until(arrived, CALL_TIMEOUT, "the four requests to reach the server")
        os.kill(victims[0], signal.SIGKILL)  # one replica dies with a generation in flight
        answers = [f.result(timeout=CALL_TIMEOUT) for f in futures]
    for code, detail in answers:  # each one retried on the other replica, or failed cleanly in one line
        assert code == 200 or (code >= 500 and "\n" not in detail["message"] and "replica" in detail["message"]), (
            code,
            detail,
        )
    assert sum(code == 200 for code, _ in answers) >= 2, answers  # the other replica's own two at least
    assert sorted(d for c, d in answers if c == 200) == [s for s, (c, _) in enumerate(answers) if c == 200]
    assert len(set(outputs.glob("*.png")) - before) == sum(code == 200 for code, _ in answers)  # none half-written
    with openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0, timeout=CALL_TIMEOUT) as client:
        after = client.images.generate(prompt="a red star", size="64x64", extra_body={"seed": 99, **FAST})
    assert after.data[0].model_extra["record"]["config"]["seed"] == 99  # the server goes on serving


def test_the_page_generates_through_the_ingress_in_a_real_browser(served):
    """The page itself, served by the ingress through Ray's proxy: an example, Generate, the picture."""
    pytest.importorskip("playwright.sync_api")
    from tests import browser as ui

    if ui.CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    with ui.playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=ui.CHROMIUM, args=flags)
        try:
            pg = ui._open(browser, served[0])
            pg.locator("#examples button.example").first.click()
            pg.wait_for_function("document.querySelector('#prompt textarea').value.includes('colour of')",
                                 timeout=ui.STATE_TIMEOUT_MS)  # fmt: skip
            pg.locator("#generate").click()
            shown = "document.querySelector('#info').innerText.includes('seed') && "
            shown += "document.querySelector('#output img') !== null"
            pg.wait_for_function(shown, timeout=ui.STATE_TIMEOUT_MS)
            pg.screenshot(path=str(ui.ART / "ray-page.png"), full_page=True)
        finally:
            browser.close()
    assert sum(status(served[0])["runs"].values()) >= 1
