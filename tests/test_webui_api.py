"""The web UI's documented API through ``gradio_client`` and plain HTTP, against an in-process server (tiny model).

It runs the README's five-line script, the preview, refused inputs (each a specific one-line message), 8 clients at
once (each gets its own seed's image), cancel of a queued and of a running job (neither writes a PNG), the REST
route (JSON with base64, multipart, errors) and the list of documented endpoints. Skipped without gradio_client.
"""

from __future__ import annotations

import base64
import inspect
import io
import re
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

import httpx  # noqa: E402  (a gradio dependency)
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from gradio_client.utils import Status  # noqa: E402
from PIL import Image  # noqa: E402

from sigma_studio.examples import IMAGES  # noqa: E402
from sigma_studio.model.request.record import read_record  # noqa: E402
from tests.conftest import live_server, wait_until  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FAST = dict(steps=2, size="64x64")  # the tiny model at its smallest: every call here takes a fraction of a second


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_pipe):
    """(url, outputs folder, the shared Jobs) of a running server: the page, its API and the REST route."""
    out = tmp_path_factory.mktemp("webui-api")
    with live_server(tiny_pipe, out) as (url, jobs, _demo):  # as `sigma webui` starts one
        yield url + "/", out, jobs


@pytest.fixture(scope="module")
def client(server):
    c = Client(server[0], verbose=False)
    yield c
    c.close()


def refs(*names: str) -> list:
    return [handle_file(str(IMAGES / n)) for n in names]


def pngs_with_seed(out: Path, seed: int) -> list[Path]:
    return list(out.glob(f"sigma-*-{seed}-*.png"))


def image_tokens(sequence: list[dict]) -> dict[str, list[str]]:
    return {part["image"]: part["tokens"] for part in sequence if "image" in part}


def wait_status(job, codes: set, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while job.status().code not in codes:
        assert time.time() < deadline, f"job stayed {job.status().code}"
        time.sleep(0.02)


def readme_script() -> str:
    """The README's gradio_client script, pointed at the test server's images (and made fast)."""
    section = (REPO / "README.md").read_text().split("## The web API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


# -- gradio_client --------------------------------------------------------------------------------------------------
def test_readme_script_generates_with_two_references_and_tokens(server):
    url, out, _ = server
    script = readme_script()
    assert len([line for line in script.splitlines() if line.strip()]) == 5
    script = script.replace("http://127.0.0.1:7860/", url).replace('"examples/images/', f'"{IMAGES}/')
    namespace: dict = {}
    exec(script.replace("api_name=", 'steps=2, size="64x64", api_name='), namespace)  # noqa: S102
    images, records = namespace["images"], namespace["records"]
    assert len(images) == len(records) == 1 and Path(images[0]).is_file()
    record = records[0]
    assert record["config"]["seed"] == 42 and record["config"]["size"] == [64, 64]
    assert image_tokens(record["sequence"]) == {"img1": ["<id>"], "img2": ["<subject>"]}
    assert record["prompt"] == "the man <id> <img1> with his cat <subject> <img2>"  # as the token menus write it
    assert read_record(images[0]).sequence == tuple(record["sequence"])  # the PNG carries its record
    assert len(pngs_with_seed(out, 42)) == 1


def test_count_makes_one_image_per_seed(client):
    images, records = client.predict("a cat <img1>", refs("cat.jpg"), seed=7, count=2, **FAST, api_name="/generate")
    assert len(images) == 2 and [r["config"]["seed"] for r in records] == [7, 8]


def test_preview_returns_the_sequence_with_tokens_and_layout(client):
    seq = client.predict("the man <img1> with his cat <img2>", refs("astronaut.jpg", "cat.jpg"),
                         [["<id>"], None], api_name="/preview")  # fmt: skip
    assert seq[0] == {"text": "the man <id>"}
    assert image_tokens(seq) == {"img1": ["<id>"], "img2": []}
    seq = client.predict("a horse <img1>", refs("horse.png"), layout="canny", layout_image=refs("horse.png")[0],
                         api_name="/preview")  # fmt: skip
    layout = [p for p in seq if p.get("role") == "canny"]
    assert len(layout) == 1 and layout[0]["tokens"] == ["<layout>"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (dict(prompt="a <styel> cat <img1>"), "Unknown token <styel>. Did you mean <style>?"),
        (dict(prompt="a cat <img1>", tokens=[["<styel>"]]), "Unknown token <styel> for img1. Did you mean <style>?"),
        (dict(prompt="a cat <img1> and <img3>"), "<img3> names an image that was not given (given: img1)"),
        (dict(prompt="a cat <img1>", images="README.md"), "Upload refused: README.md is not a readable image"),
        (dict(prompt="a cat <img1>", steps=0), "steps must be at least 2 (got 0)"),
        (dict(prompt="a cat <img1>", tokens=[["<id>"], ["<style>"]]), "2 token lists for 1 image(s)"),
        (dict(prompt="a cat <img1>", tokens=[5]), "tokens for img1 must be a list"),
        (dict(prompt="a cat <img1>", count=5), "count must be a whole number from 1 to 4 (got 5)"),
        (dict(prompt="a cat <img1>", size="big"), "size 'big' is not auto, WxH"),
        (dict(prompt="a cat <img1>", layout="canny"), "layout 'canny' needs layout_image"),
        (dict(prompt="a cat <img1>", layout="boxes", boxes=[[0.1, 0.2, 1.5, 0.9]]), "box 1 must be [x0, y0, x1, y1"),
    ],
)
def test_bad_inputs_give_their_one_line_message(client, server, inputs, message):
    images = [handle_file(str(REPO / inputs.pop("images")))] if "images" in inputs else refs("cat.jpg")
    with pytest.raises(AppError) as caught:
        client.predict(images=images, seed=31337, **{**FAST, **inputs}, api_name="/generate")
    text = str(caught.value)
    assert message in text and "\n" not in text and "Traceback" not in text
    assert not pngs_with_seed(server[1], 31337)


@pytest.mark.parametrize("image", [str(IMAGES / "cat.jpg"), {"path": str(IMAGES / "cat.jpg")}])
def test_server_files_are_not_inputs(client, image):
    """A caller names only files it uploaded: a server path (plain, or in a dict Gradio does not check) is refused."""
    with pytest.raises(AppError, match=r"img1 must be an uploaded file: pass gradio_client.handle_file\(PATH\)"):
        client.predict("a cat <img1>", [image], api_name="/preview")


def test_eight_clients_at_once_each_get_their_own_seed(server):
    url, out, _ = server
    results: dict[int, tuple] = {}

    def call(seed: int) -> None:
        c = Client(url, verbose=False)
        try:
            results[seed] = c.predict("a cat <img1>", refs("cat.jpg"), seed=seed, **FAST, api_name="/generate")
        finally:
            c.close()

    threads = [threading.Thread(target=call, args=(1000 + k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == [1000 + k for k in range(8)]
    for seed, (images, records) in results.items():
        assert records[0]["config"]["seed"] == seed
        assert read_record(images[0]).config["seed"] == seed  # the file this client got is its own
    assert len({Path(images[0]).name for images, _ in results.values()}) == 8


def test_cancel_queued_jobs_writes_nothing(server):
    """With the queue busy (its one slot held, as a page generation holds it), a job waiting for the slot and a
    job waiting behind it in Gradio's queue are both cancelled: neither ever writes a PNG."""
    url, out, jobs = server
    first, second = Client(url, verbose=False), Client(url, verbose=False)
    with jobs.slot(None):  # the queue is busy
        waiting = first.submit("a cat <img1>", refs("cat.jpg"), seed=901, **FAST, api_name="/generate")
        wait_status(waiting, {Status.PROCESSING})  # it runs on Gradio's side: it waits for the jobs slot
        queued = second.submit("a cat <img1>", refs("cat.jpg"), seed=902, **FAST, api_name="/generate")
        wait_status(queued, {Status.IN_QUEUE})  # behind it in the "gpu" concurrency group
        assert queued.cancel() and waiting.cancel()
        wait_status(waiting, {Status.CANCELLED})
        wait_status(queued, {Status.CANCELLED})
    images, _ = first.predict("a cat <img1>", refs("cat.jpg"), seed=903, **FAST, api_name="/generate")
    assert Path(images[0]).is_file()  # the queue still works, and the cancelled jobs did not run before this one
    wait_until(lambda: jobs.live == 0, 60, "every job to end")  # a cancelled job that ran would have written by now
    assert not pngs_with_seed(out, 901) and not pngs_with_seed(out, 902)
    first.close()
    second.close()


def test_cancel_running_job_stops_it(server):
    url, out, jobs = server
    c = Client(url, verbose=False)
    job = c.submit("a cat <img1>", refs("cat.jpg"), seed=904, steps=1000, size="64x64", api_name="/generate")
    wait_status(job, {Status.PROCESSING})  # 1000 steps: seconds of work, far more than the cancel takes to arrive
    assert job.cancel()
    with jobs.slot(None) as pipe:  # free once the cancelled job has stopped; had it run its 1000 steps, its PNG
        assert pipe is None  # would exist (one pipeline, no pool: the slot holds none)
    assert not pngs_with_seed(out, 904)
    c.close()


def test_documented_endpoints(client):
    from sigma_studio.webui.api import SigmaApi

    named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(named) == {"/generate", "/preview"}
    params = [p["parameter_name"] for p in named["/generate"]["parameters"]]
    assert params == [n for n in inspect.signature(SigmaApi.generate).parameters if n != "self"]
    assert params[:6] == ["prompt", "images", "tokens", "layout", "layout_image", "boxes"]
    assert params[-3:] == ["background", "boxes3d", "masks"]  # (new ones go last: callers by position keep working)
    assert [p["parameter_name"] for p in named["/preview"]["parameters"]] == params[:6] + params[-3:]


# -- REST -----------------------------------------------------------------------------------------------------------
def b64(name: str) -> str:
    return base64.b64encode((IMAGES / name).read_bytes()).decode()


def test_rest_json_with_base64_images(server):
    body = {"prompt": "the man <img1> with his cat <img2>", "images": [b64("astronaut.jpg"), b64("cat.jpg")],
            "tokens": [["<id>"], ["<subject>"]], "seed": 77, "steps": 2, "size": "64x64"}  # fmt: skip
    reply = httpx.post(server[0] + "api/v1/generate", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["records"][0]["config"]["seed"] == 77
    assert image_tokens(data["records"][0]["sequence"]) == {"img1": ["<id>"], "img2": ["<subject>"]}
    assert Image.open(io.BytesIO(base64.b64decode(data["images"][0]))).size == (64, 64)


def test_think_mode_through_the_rest_route_gives_the_plan_in_the_record(server, monkeypatch):
    from sigma_studio.model.run import think

    monkeypatch.setattr(think, "MAX_PLAN_TOKENS", 4)  # the tiny model's random plan, cut short
    body = {"prompt": "a red star", "seed": 5, "steps": 2, "size": "64x64", "think": True}
    reply = httpx.post(server[0] + "api/v1/generate", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    record = reply.json()["records"][0]
    assert record["config"]["think"] is True and isinstance(record["plan"], str)
    plain = httpx.post(server[0] + "api/v1/generate", json=body | {"think": None}, timeout=60).json()["records"][0]
    assert plain["config"]["think"] is None and plain["plan"] is None  # the tiny model was not trained to plan


def test_rest_multipart(server):
    files = [("images", ("cat.jpg", (IMAGES / "cat.jpg").read_bytes(), "image/jpeg"))]
    fields = {"prompt": "a cat <img1>", "tokens": '[["<subject>"]]', "seed": "78", "steps": "2", "size": "64x64"}
    reply = httpx.post(server[0] + "api/v1/generate", data=fields, files=files, timeout=60)
    assert reply.status_code == 200, reply.text
    record = reply.json()["records"][0]
    assert record["config"]["seed"] == 78 and image_tokens(record["sequence"]) == {"img1": ["<subject>"]}


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [
        (dict(json={"prompt": "a <styel> cat"}), 400, "Unknown token <styel>. Did you mean <style>?"),
        (dict(json={"prompt": "a cat <img1>", "images": ["not base64!"]}), 422, "img1 is not valid base64"),
        (dict(json={"prompt": "a cat", "stepz": 2}), 422, "Unknown field stepz"),
        (dict(json={"prompt": "a cat", "steps": "many"}), 422, "steps must be a whole number (got 'many')"),
        (dict(content=b"prompt", headers={"content-type": "text/plain"}), 422, "The body is not JSON"),
        (dict(content=b"x", headers={"content-type": "multipart/form-data"}), 422, "The form cannot be read"),
        (dict(files=[("images", ("notes.txt", b"hello", "text/plain"))], data={"prompt": "a <img1>"}), 400,
         "Upload refused: notes.txt is not a readable image"),
    ],
)  # fmt: skip
def test_rest_errors(server, request_kwargs, status, message):
    reply = httpx.post(server[0] + "api/v1/generate", timeout=60, **request_kwargs)
    assert reply.status_code == status and message in reply.json()["error"], reply.text
    assert "\n" not in reply.json()["error"]


def test_rest_shares_the_queue(server):
    url, _, jobs = server
    replies: list = []
    body = {"prompt": "a cat <img1>", "images": [b64("cat.jpg")], "seed": 79, "steps": 2, "size": "64x64"}
    call = threading.Thread(target=lambda: replies.append(httpx.post(url + "api/v1/generate", json=body, timeout=60)))
    with jobs.slot(None):  # a generation of the page holds the queue
        call.start()
        call.join(timeout=1.0)
        assert call.is_alive() and not replies  # the REST call waits for it
    call.join(timeout=60)
    assert replies[0].status_code == 200
