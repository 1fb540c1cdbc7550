"""The web server's bounds that hold before any work: JSON counted before it is parsed, placement tables before a
mask is decoded or a box drawn, a job's queue token freed however it ends, and PIL's pixel limit put back when
threads open pictures at once (docs/SECURITY.md)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from PIL import Image

from sigma_studio.model.errors import InputError
from sigma_studio.model.images import open_image
from sigma_studio.model.request.multisubject import MAX_SUBJECTS
from sigma_studio.model.request.structure import MAX_BOXES, ControlSpec
from sigma_studio.webui.limits import WebLimits, json_shape

pytest.importorskip("gradio")


def test_json_shape_counts_structure_outside_strings_and_stops_early():
    assert json_shape(b'{"a": [1, 2, [3]], "b": "x[[[,,\\"{{"}') == (3, 6)
    assert json_shape(b'{"prompt": "' + b",[{" * 100_000 + b'"}') == (1, 1)  # marks in a string do not count
    assert json_shape(b"[" * 1000 + b"]" * 1000, max_depth=32).depth == 33  # stopped at the first level past it
    assert json_shape(b"[" + b"0," * 100_000 + b"0]", max_items=50).items == 51
    # linear whatever the quotes: escaped quotes (every match retried from inside a string took 5 s for 20 000 of
    # them, about 14 minutes for 512 KB by extrapolation) and an unterminated string
    assert json_shape(b'\\"' * 256_000) == (0, 0)
    assert json_shape(b'{"a": "' + b"x," * 1_000_000) == (1, 1)
    limits = WebLimits(max_json_depth=4, max_json_items=10)
    assert limits.json_problem(b'{"a": [[[[[1]]]]]}') == "The JSON body nests deeper than 4 levels"
    assert limits.json_problem(b"[" + b"0," * 20 + b"0]") == "The JSON body holds over 10 values; send fewer rows"
    assert limits.json_problem(b'{"prompt": "a red star", "images": ["iVBOR", "iVBOR"]}') is None


def test_placement_tables_are_held_to_their_rows_before_any_row_is_read():
    from sigma_studio.webui.api_inputs import layout_of

    box = [0.1, 0.1, 0.5, 0.5, "cat", ""]
    assert len(layout_of("boxes", None, [box] * MAX_BOXES, (100, 200, 3)).boxes) == MAX_BOXES
    with pytest.raises(InputError, match=f"boxes has {MAX_BOXES + 1} rows; a request takes at most {MAX_BOXES} boxes"):
        layout_of("boxes", None, [box] * (MAX_BOXES + 1), (100, 200, 3))
    masks = [["/nowhere/mask.png", "cat", "img1"]] * (MAX_SUBJECTS + 1)  # refused before a file is looked at
    with pytest.raises(InputError, match=f"masks has {MAX_SUBJECTS + 1} rows; a request takes at most 10 subjects"):
        layout_of("boxes", None, None, (100, 200, 3), masks=masks)
    with pytest.raises(InputError, match=f"at most {MAX_BOXES} boxes"):
        ControlSpec(boxes=("0,0,1,1",) * (MAX_BOXES + 1))


def test_a_job_that_fails_before_its_slot_leaves_the_queue():
    from sigma_studio.webui.api import run_job
    from sigma_studio.webui.jobs import Jobs

    jobs = Jobs(1)

    def refused(token):  # as ZeroGPU's wrapper raises (out of quota) before the job reaches jobs.slot
        raise RuntimeError("quota")

    for _ in range(3):
        with pytest.raises(RuntimeError, match="quota"):
            asyncio.run(run_job(jobs, refused))
    assert jobs.live == 0


def test_pixel_limit_is_put_back_when_threads_open_pictures_at_once(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (32, 32), (9, 9, 9)).save(path)
    before = Image.MAX_IMAGE_PIXELS
    errors = []

    def opener(limit: int) -> None:
        try:
            for _ in range(200):
                assert open_image(path, max_pixels=limit).size == (32, 32)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=opener, args=(1_000_000 * (k + 1),)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and Image.MAX_IMAGE_PIXELS == before


def test_an_event_naming_a_file_by_url_is_refused_before_gradio_downloads_it():
    import json

    from sigma_studio.webui.limits import BodyLimit, remote_file

    def event(path: str) -> bytes:
        file = {"path": path, "url": None, "meta": {"_type": "gradio.FileData"}, "orig_name": "x.png"}
        return json.dumps({"fn_index": 3, "data": ["a cat", [file]], "session_hash": "s"}).encode()

    assert "not fetched from URLs" in remote_file(event("https://example.com/huge.png"))
    assert "not fetched from URLs" in remote_file(event(" HTTP://10.0.0.1/x"))
    assert remote_file(event("/tmp/gradio/abc/x.png")) is None  # an upload: the server's own path
    assert remote_file(b'{"data": ["see https://example.com"]}') is None  # a URL in text is only text

    reached, sent = [], []

    async def app(scope, receive, send):
        reached.append((await receive())["body"])

    async def call(body: bytes) -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        scope = {"type": "http", "method": "POST", "path": "/gradio_api/queue/join", "headers": []}

        async def send(message):
            sent.append(message)

        await BodyLimit(app, WebLimits())(scope, lambda: _pop(messages), send)

    asyncio.run(call(event("https://example.com/huge.png")))
    assert not reached and sent[0]["status"] == 400 and b"not fetched from URLs" in sent[1]["body"]
    asyncio.run(call(event("/tmp/gradio/abc/x.png")))
    assert reached == [event("/tmp/gradio/abc/x.png")]


async def _pop(messages: list) -> dict:
    return messages.pop(0)


def test_a_burst_of_calls_cannot_reserve_more_than_the_queue_holds():
    from sigma_studio.webui.jobs import Jobs

    jobs, start = Jobs(1), threading.Barrier(24)
    tokens: list = []

    def call() -> None:
        start.wait()  # every thread asks at once
        tokens.append(jobs.reserve(2))

    threads = [threading.Thread(target=call) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    granted = [t for t in tokens if t is not None]
    assert len(granted) == 3 and jobs.live == 3  # one running and two waiting, not 24
    for token in granted:
        jobs.discard(token)
    assert jobs.live == 0 and jobs.reserve(0) is not None


def test_page_tokens_whose_jobs_never_come_neither_fill_the_queue_nor_memory(monkeypatch):
    """A page token (handed out as Generate is clicked) counts against the queue only once its job reaches it: the
    page's start event called alone, or a job Gradio's full queue refused, leaves a token that never blocks the REST
    and OpenAI routes, and is forgotten after PENDING_S (at most MOST_PENDING wait)."""
    from types import SimpleNamespace

    from sigma_studio.webui import jobs as jobs_module
    from sigma_studio.webui.jobs import Cancelled, Jobs

    now = [1000.0]
    monkeypatch.setattr(jobs_module, "time", SimpleNamespace(monotonic=lambda: now[0]))  # this module's clock only
    monkeypatch.setattr(jobs_module, "MOST_PENDING", 50)
    jobs = Jobs(1)
    orphans = [jobs.submit() for _ in range(40)]  # 40 clicks whose jobs never came
    assert jobs.reserve(0) is not None and jobs.live == 41  # the queue still has its one place
    with jobs.slot(orphans[0]):  # a page job that does come counts while it runs
        assert jobs.reserve(1) is None
    assert jobs.live == 40 and jobs.cancel(orphans[1]) == "queued"  # its page stopped it
    for _ in range(30):  # past MOST_PENDING: the oldest are forgotten, not kept; a stopped one stays stopped
        jobs.submit()
    assert jobs.live == 51 and orphans[1] in jobs._live and orphans[2] not in jobs._live
    with pytest.raises(Cancelled), jobs.slot(orphans[1]):
        raise AssertionError("a job its page stopped has started")
    now[0] += jobs_module.PENDING_S + 1
    fresh = jobs.submit()  # an hour on, the others are forgotten
    assert jobs.live == 2 and jobs.cancel(fresh) == "queued" and jobs.cancel(orphans[-1]) is None


def test_a_body_over_the_limit_is_one_413_in_each_routes_shape_and_no_server_error(tmp_path, tiny_pipe, caplog):
    import httpx

    from tests.conftest import live_server

    def chunks():  # no content-length: the body is counted as it arrives, while the route reads it
        yield b'{"prompt": "'
        for _ in range(40):
            yield b"x" * 2**16
        yield b'"}'

    json_type = {"content-type": "application/json"}
    with live_server(tiny_pipe, tmp_path, limits=WebLimits(max_request_mb=1)) as (url, jobs, _demo):
        rest = httpx.post(url + "/api/v1/generate", content=chunks(), headers=json_type, timeout=60)
        assert rest.status_code == 413 and rest.json() == {"error": "The request body is over the limit of 1 MB"}
        openai = httpx.post(url + "/v1/images/generations", content=chunks(), headers=json_type, timeout=60)
        assert openai.status_code == 413 and openai.json()["error"]["message"].endswith("the limit of 1 MB")
        assert openai.json()["error"]["type"] == "invalid_request_error"
        assert jobs.live == 0  # the reserved places were given back
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text  # a refusal, not a failure
