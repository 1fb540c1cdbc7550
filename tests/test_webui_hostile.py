"""The second hostile review of the web server (2026-12-07): each finding, as the attacker would send it.

Escaped or UTF-16 bodies that hid a file URL or nesting from the body checks; the mask editor's layer store grown by
a client-named index; downscaled copies of API uploads left in Gradio's folder; one-file uploads of any size; a body
sent a byte at a time; decoders other than the pictures' formats; errors that echo what they were sent; the OpenAI
file route racing the sweep; an API key kept with its line end. Skipped without gradio.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

pytest.importorskip("gradio")

import httpx  # noqa: E402  (a gradio dependency)
from PIL import Image  # noqa: E402

from sigma_studio.model.errors import InputError  # noqa: E402
from sigma_studio.webui.limits import WebLimits, event_problem  # noqa: E402
from tests.conftest import live_server  # noqa: E402

JSON = b"application/json"


def file_event(**file) -> bytes:
    return json.dumps({"fn_index": 3, "data": ["a cat", [file]], "session_hash": "s"}).encode()


def test_a_file_url_hidden_by_an_escape_or_an_encoding_is_refused():
    limits = WebLimits()
    escaped = file_event(path="https://example.com/10GB.bin", meta={"_type": "gradio.FileData"})
    escaped = escaped.replace(b"FileData", b"File\\u0044ata")  # the bytes no longer say FileData; the value does
    assert b"FileData" not in escaped and "not fetched from URLs" in event_problem(escaped, JSON, limits)
    data_url = file_event(path="/tmp/gradio/x/a.png", url="data:image/png;base64,AAAA", meta={"_type": "x"})
    assert "not fetched from URLs" in event_problem(data_url, JSON, limits)  # Gradio would decode it into its cache
    plain = file_event(path="https://example.com/x.png", meta={"_type": "gradio.FileData"})
    utf16 = plain.decode().encode("utf-16")  # json.loads reads it; the byte scans would not
    assert event_problem(utf16, JSON, limits) == "The JSON body must be UTF-8 text"
    assert event_problem(plain.decode().encode("utf-16-le"), b"", limits) == "The JSON body must be UTF-8 text"
    page = file_event(path="/tmp/gradio/x/a.png", url="http://127.0.0.1:7860/gradio_api/file=/tmp/gradio/x/a.png")
    assert event_problem(page, JSON, limits) is None  # what the page sends: an upload, with its URL on this server


def test_a_form_or_a_second_content_type_does_not_walk_past_the_checks():
    """Only the component server (the mask editor's layers) takes a form unchecked; a request with two Content-Type
    headers (the server reads the first, a check that read the last could be walked past) is a 400."""
    from sigma_studio.webui.limits import BodyLimit

    url_event = file_event(path="https://example.com/x.png", meta={"_type": "gradio.FileData"})
    form = b"multipart/form-data; boundary=b"
    assert "not fetched from URLs" in event_problem(url_event, form, WebLimits(), "/gradio_api/queue/join")
    assert event_problem(url_event, form, WebLimits(), "/gradio_api/component_server") is None
    reached, sent = [], []

    async def app(scope, receive, send):
        reached.append(scope)

    async def call(headers) -> None:
        scope = {"type": "http", "method": "POST", "path": "/gradio_api/queue/join", "headers": headers}
        messages = [{"type": "http.request", "body": url_event, "more_body": False}]

        async def receive():
            return messages.pop(0)

        async def send(message):
            sent.append(message)

        await BodyLimit(app, WebLimits())(scope, receive, send)

    asyncio.run(call([(b"content-type", b"application/json"), (b"content-type", form)]))
    assert not reached and sent[0]["status"] == 400 and b"more than one Content-Type" in sent[1]["body"]


def test_nesting_hidden_in_utf16_is_refused_before_it_is_parsed():
    limits = WebLimits(max_json_depth=8)
    hidden = ('{"a": "\\"", "b": ' + "[" * 50 + "]" * 50 + ', "c": "\\""}').encode("utf-16-le")
    assert limits.json_problem(hidden) == "The JSON body must be UTF-8 text"
    assert "nests deeper than 8" in limits.json_problem(hidden.decode("utf-16-le").encode())


def test_the_mask_editor_keeps_what_the_page_could_send():
    from gradio.data_classes import DataWithFiles as AcceptBlobs  # what the component server hands it

    from sigma_studio.webui import editor

    mask = editor.MaskEditor(render=False)
    blob = {"type": "layer", "index": "500000000", "file": b"", "id": "x"}
    assert mask.accept_blobs(AcceptBlobs(data=blob, files=[("f", b"png")])) is None
    assert mask.blob_storage == {}  # nothing grown, nothing kept
    for k in range(editor.MOST_BLOBS + 5):  # sets posted and never read: the oldest go
        mask.accept_blobs(AcceptBlobs(data=blob | {"index": "0", "id": f"id{k}"}, files=[("f", b"png")]))
    assert len(mask.blob_storage) == editor.MOST_BLOBS and "id0" not in mask.blob_storage
    assert [b.layers for b in mask.blob_storage.values()][-1] == [b"png"]
    assert "accept_blobs" in mask.get_config()["server_fns"]  # the name the browser calls it by


def test_the_mask_editor_reads_few_small_pictures_of_the_allowed_formats(tmp_path):
    import gradio as gr
    from gradio.components.image_editor import EditorData
    from gradio.data_classes import FileData

    from sigma_studio.webui import editor

    mask = editor.MaskEditor(render=False, type="numpy")
    small = tmp_path / "small.png"
    Image.new("RGBA", (8, 8), (255, 255, 255, 255)).save(small)
    layers = [FileData(path=str(small))] * 20
    value = mask.preprocess(EditorData(background=None, layers=layers, composite=None))
    assert len(value["layers"]) == editor.MOST_LAYERS
    big = tmp_path / "big.png"
    Image.new("1", (5000, 4000)).save(big)  # 20 megapixels, a few kilobytes
    with pytest.raises(gr.Error, match="resize it first"):
        mask.preprocess(EditorData(background=None, layers=[FileData(path=str(big))], composite=None))
    eps = tmp_path / "mask.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 6\nshowpage\n")
    with pytest.raises(gr.Error, match="takes a picture"):
        mask.preprocess(EditorData(background=None, layers=[FileData(path=str(eps))], composite=None))


def test_a_server_decodes_only_the_pictures_formats(tmp_path):
    from sigma_studio.model.images import PICTURE_FORMATS, restrict_formats

    restrict_formats()  # (what launch does: this test process serves in other tests anyway)
    assert set(Image.OPEN) <= set(PICTURE_FORMATS) and set(Image.ID) <= set(PICTURE_FORMATS)
    eps = tmp_path / "x.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 6\nshowpage\n")
    with pytest.raises(OSError):
        Image.open(eps)  # no format is tried that would hand it to Ghostscript
    Image.new("RGB", (4, 4)).save(tmp_path / "y.ppm")  # writing is untouched
    restrict_formats()  # idempotent


def test_a_body_that_does_not_arrive_in_time_is_a_408():
    from sigma_studio.webui.rest import RestError, in_time

    with pytest.raises(RestError, match="did not arrive within 0 s") as refused:
        asyncio.run(in_time(asyncio.sleep(30), seconds=0.05))
    assert refused.value.status == 408
    assert asyncio.run(in_time(asyncio.sleep(0, "read"), seconds=30)) == "read"


def test_a_message_echoing_a_huge_value_is_cut():
    from sigma_studio.webui.api import MESSAGE_CHARS, one_line

    line = one_line(InputError(f"speed {'A' * 10_000_000!r} is not one of exact, fast"))
    assert len(line) == MESSAGE_CHARS and line.endswith("…") and "\n" not in line
    assert one_line(InputError("short\nand plain")) == "short and plain"


def test_an_api_key_is_kept_without_its_line_end_and_an_empty_one_is_refused():
    from sigma_studio.cli.webui import checked_key

    assert checked_key("s3cret\n") == "s3cret" and checked_key(None) is None
    with pytest.raises(InputError, match="is empty"):
        checked_key("  \n")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_pipe):
    out = tmp_path_factory.mktemp("webui-hostile")
    with live_server(tiny_pipe, out, limits=WebLimits(max_upload_mb=1)) as (url, jobs, demo):
        yield url, out, jobs, demo


def test_one_upload_is_one_files_worth(server):
    """Gradio takes up to 1 000 files a request, each under --max-upload-mb; the route takes one file's worth."""
    url = server[0]
    many = [("files", (f"{k}.png", b"\0" * (2**20 - 4096), "image/png")) for k in range(3)]  # each one under it
    reply = httpx.post(url + "/gradio_api/upload", files=many, timeout=60)
    assert reply.status_code == 413 and "limit of 2 MB" in reply.json()["error"]
    one = {"files": ("a.png", b"\0" * 1000, "image/png")}
    assert httpx.post(url + "/gradio_api/upload", files=one, timeout=60).status_code == 200


def test_api_downscaled_copies_leave_nothing_behind(server, tmp_path):
    from gradio.utils import get_upload_folder
    from gradio_client import Client, handle_file

    from sigma_studio.webui.handlers import UPLOAD_MAX_SIDE

    url, out, _jobs, _demo = server
    wide = tmp_path / "wide.png"
    Image.new("RGB", (UPLOAD_MAX_SIDE + 200, 40), (200, 30, 30)).save(wide)  # a long side past the limit
    uploads = Path(get_upload_folder())  # (shared by every server this machine ran: compared before and after)
    before = set(uploads.rglob("wide-*.png"))  # prepare_upload's copy names: <stem>-<hex>.png
    client = Client(url, verbose=False)
    try:
        parts = client.predict("a cat <img1>", [handle_file(str(wide))], api_name="/preview")
    finally:
        client.close()
    assert [p["role"] for p in parts if "image" in p] == ["reference"]
    assert set(uploads.rglob("wide-*.png")) == before and not list((out / ".incoming").glob("rest-*"))


def test_an_output_is_served_as_a_png_only(server):
    url, out, _jobs, _demo = server
    name = "sigma-20261207-000000-1-0123abcd.png"
    Image.new("RGB", (8, 8)).save(out / name)
    reply = httpx.get(f"{url}/v1/images/files/{name}", timeout=60)
    assert reply.status_code == 200 and reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["content-type"] == "image/png" and reply.content == (out / name).read_bytes()
    (out / name).unlink()  # swept
    assert httpx.get(f"{url}/v1/images/files/{name}", timeout=60).status_code == 404
