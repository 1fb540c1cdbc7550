"""The web server as an attacker meets it: over HTTP, against a live server started as ``sigma webui`` starts one.

Every page event and the REST route are sent what a hostile client would send: paths of server files in history
entries, records, mask tables and file references; oversized, chunked and deeply nested bodies; picture bombs;
numbers out of range. The server must stay up, answer each with a 4xx and one line, and serve no file it did not store.
Skipped without gradio.
"""

from __future__ import annotations

import base64
import io
import json
import random
import re
import socket
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("gradio")

import httpx  # noqa: E402  (a gradio dependency)
from PIL import Image  # noqa: E402

from tests.conftest import live_server, wait_until  # noqa: E402

SECRET = "sigma-secret-7f3a9c"  # in every planted file: no response may ever carry it
FAST = dict(steps=2, size="64x64")
SMALL = dict(max_request_mb=4, max_event_kb=64, max_megapixels=4, max_json_depth=16, max_prompt_chars=2000)


@pytest.fixture(scope="module")
def secrets(tmp_path_factory) -> dict[str, Path]:
    """Files a hostile client would like to read: in the temp folder (which Gradio serves from), as text and as a
    picture whose pixels spell the secret."""
    folder = tmp_path_factory.mktemp("not-served")
    text = folder / "secret.txt"
    text.write_text(SECRET)
    picture = folder / "secret.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(picture, pnginfo=_info(SECRET))
    return {"text": text, "picture": picture}


def _info(text: str):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", text)
    return info


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_pipe):
    """(url, outputs, jobs, demo) of a server with small limits, started by webui.server.launch."""
    from sigma_studio.webui.limits import WebLimits

    out = tmp_path_factory.mktemp("webui-security")
    stale = out / ".incoming" / f"rest-{_dead_pid()}-0123456789ab"  # left by a server killed mid-request
    stale.mkdir(parents=True)
    (stale / "img1").write_bytes(b"upload")
    with live_server(tiny_pipe, out, limits=WebLimits(**SMALL)) as (url, jobs, demo):
        yield url, out, jobs, demo


def _dead_pid() -> int:
    done = subprocess.run(["true"], check=True)  # a process that has ended: its pid names nothing now
    del done
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def fn_index(demo, name: str) -> int:
    return next(k for k, fn in demo.fns.items() if fn.name == name)


def event(url: str, index: int, data: list, **extra) -> httpx.Response:
    body = {"fn_index": index, "data": data, "session_hash": "attacker", **extra}
    return httpx.post(url + "/gradio_api/run/predict", json=body, timeout=120)


def assert_nothing_leaked(url: str, reply: httpx.Response) -> None:
    """No secret in the answer, and no file the answer points to carries it."""
    assert SECRET not in reply.text
    for ref in set(re.findall(r'"(?:url|path)"\s*:\s*"([^"]+)"', reply.text)):
        target = ref if ref.startswith("http") else f"{url}/gradio_api/file={ref}"
        if target.startswith(url):
            served = httpx.get(target, timeout=60)
            assert SECRET.encode() not in served.content, f"{target} served a planted file"


def table(rows: list, width: int = 6) -> dict:
    """A Dataframe's value as the browser sends it."""
    return {"headers": [str(k) for k in range(width)], "data": rows}


def file_data(path: Path) -> dict:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}, "orig_name": path.name}


# ----------------------------------------------------------------------------------------------------- files


def test_history_entries_cannot_name_server_files(server, secrets):
    url, out, _, demo = server
    link = out / "sigma-20260101-000000-1-deadbeef.png"  # an output's name, but a link out of the folder
    link.symlink_to(secrets["picture"])
    hostile = [
        [{"image": str(secrets["picture"]), "caption": "c"}],  # the probe's request (e9cdb00 served the file)
        [{"image": str(secrets["picture"])}],
        [{"image": str(secrets["text"]), "caption": "x"}],
        [{"image": f"{out}/../{secrets['picture'].parent.name}/secret.png"}],
        [{"image": link.name}],
        [{"image": str(link)}],
        [{"image": 12}, "junk", None, {"no": "image"}],
    ]
    for history in hostile:
        reply = event(url, fn_index(demo, "show_history"), [history])
        assert reply.status_code == 200, reply.text
        assert reply.json()["data"][0] in ([], None), reply.text
        assert_nothing_leaked(url, reply)


def test_restore_reads_the_record_from_the_servers_own_png(server, secrets):
    url, out, _, demo = server
    forged = {
        "prompt": "a <img1>",
        "images": [{"name": "img1", "role": "reference", "file": str(secrets["picture"])}],
        "config": {},
    }
    history = [{"image": str(secrets["picture"]), "caption": "c", "record": forged}]
    reply = event(url, fn_index(demo, "restore"), [history], event_data={"index": 0, "value": None})
    assert reply.status_code in (200, 500), reply.text  # nothing to restore: no entry names a stored output
    assert_nothing_leaked(url, reply)
    # a true output's entry restores from the PNG's own record, whatever record the browser sends with it
    made = httpx.post(url + "/api/v1/generate", json={"prompt": "a red circle", "seed": 3, **FAST}, timeout=120)
    assert made.status_code == 200, made.text
    name = next(p.name for p in out.glob("sigma-*.png") if not p.is_symlink())
    history = [{"image": name, "caption": "c", "record": forged}]
    reply = event(url, fn_index(demo, "restore"), [history], event_data={"index": 0, "value": None})
    assert reply.status_code == 200, reply.text
    assert "a red circle" in reply.text and "a <img1>" not in reply.text
    assert_nothing_leaked(url, reply)


def test_mask_rows_name_only_masks_the_page_drew(server, secrets):
    url, _, _, demo = server
    empty = event(url, fn_index(demo, "draw"), [table([]), table([]), table([]), None]).json()["data"][0]
    for row in ([str(secrets["picture"]), "x", "img1"], ["mask-0123456789ab.png", "", ""]):
        reply = event(url, fn_index(demo, "draw"), [table([]), table([]), table([row], 3), None])
        assert reply.status_code == 200, reply.text
        assert_nothing_leaked(url, reply)
        drawn = httpx.get(reply.json()["data"][0]["url"], timeout=60).content
        assert drawn == httpx.get(empty["url"], timeout=60).content  # the planted picture painted nothing
    # the canvas's background is an upload: a server file named there is refused before anything draws it
    reply = event(url, fn_index(demo, "draw"), [table([]), table([]), table([]), file_data(secrets["picture"])])
    assert (
        reply.status_code >= 400
        or reply.json()["data"][0] is None
        or (
            httpx.get(reply.json()["data"][0]["url"], timeout=60).content == httpx.get(empty["url"], timeout=60).content
        )
    )
    assert_nothing_leaked(url, reply)


def test_file_references_must_be_uploads(server, secrets):
    url, _, _, demo = server
    reply = event(url, fn_index(demo, "_canny_preview"), [file_data(secrets["picture"]), 100, 200, 0])
    assert reply.status_code >= 400 or reply.json()["data"][0] is None
    assert_nothing_leaked(url, reply)
    reply = httpx.post(url + "/api/v1/generate", json={"prompt": "a <img1>", "images": [str(secrets["picture"])]})
    assert reply.status_code == 422 and "not valid base64" in reply.json()["error"]


# ------------------------------------------------------------------------------------------- denial of service


def test_a_huge_prompt_is_refused_before_it_is_read(server):
    url = server[0]
    reply = httpx.post(url + "/api/v1/generate", json={"prompt": "<subject> " * 100_000}, timeout=120)
    assert reply.status_code == 413 and reply.json()["error"].startswith("The prompt is 1000000 characters")
    reply = httpx.post(url + "/api/v1/generate", json={"prompt": "<subject> " * 300}, timeout=120)
    assert reply.status_code == 413 and "at most 2000" in reply.json()["error"]


def test_bodies_over_the_limit_are_cut_chunked_or_not(server):
    url = server[0]

    def chunks():  # no content-length: the body is counted as it arrives
        yield b'{"prompt": "'
        for _ in range(6 * 16):
            yield b"a" * 2**16
        yield b'"}'

    reply = httpx.post(url + "/api/v1/generate", content=chunks(), headers={"content-type": "application/json"})
    assert reply.status_code == 413 and "over the limit of 4 MB" in reply.json()["error"], reply.text
    reply = httpx.post(url + "/api/v1/generate", content=b"x" * (5 * 2**20), headers={"content-type": "text/plain"})
    assert reply.status_code == 413
    big_event = {"fn_index": 0, "data": ["x" * 100_000], "session_hash": "a"}
    reply = httpx.post(url + "/gradio_api/run/predict", json=big_event, timeout=60)
    assert reply.status_code == 413 and "64 KB" in reply.json()["error"]


def test_deeply_nested_json_is_a_400(server):
    url = server[0]
    deep = b'{"prompt": "a", "tokens": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    reply = httpx.post(url + "/api/v1/generate", content=deep, headers={"content-type": "application/json"})
    assert reply.status_code == 400 and "nests deeper than 16" in reply.json()["error"]
    body = b'{"fn_index": 0, "session_hash": "a", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    reply = httpx.post(url + "/gradio_api/run/predict", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 400 and "nests deeper" in reply.json()["error"]
    escaped = json.dumps({"prompt": "[[[[" * 100 + '\\"' + "{" * 50, **FAST})  # brackets in strings do not count
    reply = httpx.post(url + "/api/v1/generate", content=escaped, headers={"content-type": "application/json"},
                       timeout=120)  # fmt: skip
    assert reply.status_code == 200, reply.text[:300]


def test_json_of_too_many_values_is_a_400_before_it_is_parsed(server):
    url = server[0]
    many = b'{"prompt": "a", "boxes": [' + b"0," * 30_000 + b"0]}"  # 60 KB: under every size limit
    reply = httpx.post(url + "/api/v1/generate", content=many, headers={"content-type": "application/json"})
    assert reply.status_code == 400 and "over 20000 values" in reply.json()["error"], reply.text
    body = b'{"fn_index": 0, "session_hash": "a", "data": [' + b"0," * 30_000 + b"0]}"
    reply = httpx.post(url + "/gradio_api/run/predict", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 400 and "over 20000 values" in reply.json()["error"]


def test_a_full_queue_answers_the_rest_route_429_before_its_body(server):
    url, _, jobs, _ = server
    tokens = [jobs.reserve(10**6) for _ in range(jobs.concurrency + 32)]  # the queue is full (launch's max_queue)
    try:
        reply = httpx.post(url + "/api/v1/generate", json={"prompt": "a", **FAST}, timeout=60)
    finally:
        for token in tokens:
            jobs.discard(token)
    assert reply.status_code == 429 and reply.headers["retry-after"].isdigit() and "busy" in reply.json()["error"]


def test_a_picture_bomb_is_refused_from_its_header(server):
    url = server[0]
    buf = io.BytesIO()
    Image.new("1", (15000, 15000)).save(buf, format="PNG")  # ~30 KB on disk, 225 megapixels decoded
    reply = httpx.post(
        url + "/api/v1/generate",
        json={"prompt": "a <img1>", "images": [base64.b64encode(buf.getvalue()).decode()], **FAST},
        timeout=120,
    )
    assert reply.status_code == 400 and "over 4 megapixels" in reply.json()["error"], reply.text


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"size": "0x0"}, "at least 1 pixel"),
        ({"size": "100x64"}, "not a multiple of 16"),
        ({"size": "256x256"}, "over this model's limit"),
        ({"size": "9" * 5000 + "x1"}, "is not auto, WxH"),
        ({"seed": -2}, "seed -2 is not a seed"),
        ({"steps": 2.5}, "steps must be a whole number"),
    ],
)
def test_numbers_follow_the_clis_rules(server, fields, message):
    reply = httpx.post(url_of(server), json={"prompt": "a red circle", **FAST, **fields}, timeout=120)
    assert reply.status_code in (400, 422) and message in reply.json().get("error", ""), reply.text[:300]
    assert "\n" not in reply.json()["error"]


def url_of(server) -> str:
    return server[0] + "/api/v1/generate"


# ------------------------------------------------------------------------------------------------- leftovers


def test_stale_rest_upload_folders_are_removed_at_start(server):
    out = server[1]
    assert not list((out / ".incoming").glob("rest-*"))


def test_a_rest_client_that_disconnects_cancels_its_job(server):
    url, out, jobs, _ = server
    before = set(out.glob("sigma-*.png"))
    holder = jobs.submit()
    with jobs.slot(holder):  # the queue is busy: the REST job waits for its turn
        body = json.dumps({"prompt": "a red circle", "seed": 11, **FAST}).encode()
        host, port = url.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)))
        head = f"POST /api/v1/generate HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        sock.sendall(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_until(lambda: jobs.live == 2, 120, "the REST job to queue")
        sock.close()
        wait_until(lambda: jobs.live == 1, 120, "the REST job to be cancelled")
    assert set(out.glob("sigma-*.png")) == before


def test_a_cancelled_job_keeps_nothing_it_does_not_say(server, tiny_pipe):
    from sigma_studio.model import GenerationConfig, build_request
    from sigma_studio.webui import handlers as h
    from sigma_studio.webui.api import SigmaApi
    from sigma_studio.webui.jobs import Cancelled, Jobs

    out, jobs = server[1] / "cancel", Jobs(1)
    out.mkdir()
    token = jobs.submit()

    def cancel_after_first(request, progress=None):  # the user presses Cancel once the first image is written
        result = tiny_pipe(request, progress=progress)
        jobs.cancel(token)
        return result

    request = build_request("a red circle", arch=tiny_pipe.arch, config=GenerationConfig(steps=2, size=(64, 64)))
    with pytest.raises(Cancelled) as page:
        h.run_request(cancel_after_first, request, out, count=4, jobs=jobs, token=token)
    assert [Path(p).exists() for p, _ in page.value.kept] == [True]  # the page shows it and says it was kept
    token = jobs.submit()
    api = SigmaApi(tiny_pipe, outputs=out, jobs=jobs)
    api.pipe = cancel_after_first  # (only _run calls it)
    before = set(out.glob("*.png"))
    with pytest.raises(Cancelled):
        api._run(token, request, 4)
    assert set(out.glob("*.png")) == before  # an API caller gets nothing, so nothing stays


# ----------------------------------------------------------------------------------------------------- fuzzing


def hostile_values(rng: random.Random, secrets: dict[str, Path]) -> list:
    paths = [str(p) for p in secrets.values()] + ["/etc/passwd", "../../etc/passwd", "~/.ssh/id_rsa"]
    return [
        rng.choice(paths),
        file_data(Path(rng.choice(paths))),
        [
            {
                "image": rng.choice(paths),
                "record": {"images": [{"name": "img1", "role": "reference", "file": rng.choice(paths)}]},
            }
        ],  # fmt: skip
        [[rng.choice(paths), "label", "img1"]],
        {"headers": ["a"], "data": [[rng.choice(paths)]]},
        {"background": file_data(Path(rng.choice(paths))), "layers": [], "composite": None},
        rng.choice([-1, -(2**63), 2**70, 1e308, -1e308, 0, 3.5]),
        rng.choice(["", "x" * 5000, "<subject>" * 200, "\x00", "../", "🙂" * 300]),
        rng.choice([None, True, [], {}, [[[]]]]),
    ]


def test_fuzz_every_event_and_the_rest_route(server, secrets):
    """Random and hostile JSON to every page event and the REST route (bounded: 300 requests); the server stays
    up, the REST route never answers 500, and nothing planted is served."""
    url, _, _, demo = server
    rng = random.Random(20)
    indices = [k for k, fn in demo.fns.items() if not fn.queue or fn.name in ("restore", "show_history")]
    for _ in range(200):
        index = rng.choice(indices)
        n = len(demo.fns[index].inputs)
        data = [rng.choice(hostile_values(rng, secrets)) for _ in range(n)]
        reply = event(url, index, data, event_data={"index": rng.choice([0, -1, 10**9, "x"]), "value": None})
        assert reply.status_code < 600
        assert_nothing_leaked(url, reply)
    fields = ["prompt", "images", "tokens", "layout", "layout_image", "boxes", "steps", "seed", "size", "count"]
    for _ in range(100):
        body = {rng.choice(fields): rng.choice(hostile_values(rng, secrets)) for _ in range(rng.randint(1, 5))}
        body.setdefault("prompt", "a red circle")
        body |= {"steps": 2, "size": "64x64"} if rng.random() < 0.5 else {}
        reply = httpx.post(url + "/api/v1/generate", json=body, timeout=120)
        assert reply.status_code in (200, 400, 409, 413, 422), (body, reply.text)
        assert "\n" not in reply.json().get("error", "")
        assert_nothing_leaked(url, reply)
    assert httpx.get(url + "/gradio_api/info", timeout=60).status_code == 200  # still up


def test_a_placed_subject_on_the_page_never_names_a_server_file():
    """A box's reference column is a slot name; a path there was read from the server's disk as the subject."""
    from sigma_studio.model import InputError
    from sigma_studio.webui import handlers as h

    secret = str(Path(__file__).resolve().parents[1] / "examples" / "images" / "cat.jpg")
    for ref in (secret, "../../etc/passwd", "img1/../x", "img0"):
        box = [[0.0, 0.0, 1.0, 1.0, "x", ref]]
        with pytest.raises(InputError, match="not a slot name"):
            h.controls_of(h.LayoutInputs("boxes", None, 100, 200, 0, None, None, box))
    box = [[0.0, 0.0, 1.0, 1.0, "x", "img2"]]
    assert h.controls_of(h.LayoutInputs("boxes", None, 100, 200, 0, None, None, box)).subjects == (
        "img2@box=0.0,0.0,1.0,1.0:x",
    )
