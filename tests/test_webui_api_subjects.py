"""SIGMA-GEN through the web API (issue 22): ``background``, ``boxes3d`` and ``masks``, the page's layout inputs, by
``gradio_client`` (``/generate``, ``/preview``), by ``POST /api/v1/generate`` (multipart and JSON) and by the OpenAI
edit route, against an in-process server (tiny model). Each call's PNG carries the controls in its record; each bad
input is a one-line refusal (a 4xx on REST) that writes nothing. Skipped without gradio_client."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

import httpx  # noqa: E402  (a gradio dependency)
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from gradio_client.utils import Status  # noqa: E402
from PIL import Image  # noqa: E402

from sigma_studio.examples import IMAGES  # noqa: E402
from sigma_studio.model.request.record import read_record  # noqa: E402
from tests.conftest import live_server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FAST = dict(steps=2, size="64x64")
SOLID = [-0.3, 0.0, 3.0, 0.8, 1.0, 0.6, 20.0, "cat", "img1"]  # a 3-D box ahead of the camera, left of centre
SOLID_SPEC = "img1@box3d=-0.3,0.0,3.0,0.8,1.0,0.6,20.0"
MASK_NAME = r"mask-[0-9a-f]{12}\.png"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_pipe):
    out = tmp_path_factory.mktemp("webui-api-subjects")
    with live_server(tiny_pipe, out) as (url, jobs, _demo):
        yield url + "/", out, jobs


@pytest.fixture(scope="module")
def client(server):
    c = Client(server[0], verbose=False)
    yield c
    c.close()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, Path]:
    """The files the callers send: a mask (white in the top-left), an empty one, one of another shape, a
    background of random pixels, and a text file."""
    folder = tmp_path_factory.mktemp("pictures")
    mask = np.zeros((64, 64), np.uint8)
    mask[4:24, 6:30] = 255
    files = {"mask": mask, "empty": np.zeros((64, 64), np.uint8), "wide": np.full((32, 64), 255, np.uint8)}
    files["background"] = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    paths = {name: folder / f"{name}.png" for name in files}
    for name, array in files.items():
        Image.fromarray(array).save(paths[name])
    paths["notes"] = folder / "notes.txt"
    paths["notes"].write_text("not a picture")
    return paths


def ref(name: str):
    return handle_file(str(IMAGES / name))


def subjects_of(png: str | Path) -> dict:
    """The controls the PNG's own record holds."""
    return read_record(png).controls


def assert_stored_mask(spec: str, out: Path) -> None:
    """A mask subject names the server's copy of the upload, saved under <outputs>/uploads as the page saves one."""
    source, _, placement = spec.partition("@")
    path = Path(placement.removeprefix("mask="))
    assert source == "img1" and placement.startswith("mask=") and path.parent == (out / "uploads").resolve()
    assert re.fullmatch(MASK_NAME, path.name) and path.is_file()


# -- gradio_client --------------------------------------------------------------------------------------------------
def test_gradio_boxes3d(client, server):
    images, records = client.predict("a cat <img1> in a meadow", [ref("cat.jpg")], layout="boxes", boxes3d=[SOLID],
                                     seed=5, **FAST, api_name="/generate")  # fmt: skip
    controls = subjects_of(images[0])
    assert controls["subjects"] == [SOLID_SPEC] and records[0]["controls"] == controls
    assert [img["name"] for img in records[0]["images"]][-2:] == ["identities", "spatial"]


def test_gradio_masks(client, server, pictures):
    images, _ = client.predict("a cat <img1> in a meadow", [ref("cat.jpg")], layout="boxes",
                               masks=[[handle_file(str(pictures["mask"])), "cat", "img1"]], seed=6, **FAST,
                               api_name="/generate")  # fmt: skip
    (spec,) = subjects_of(images[0])["subjects"]
    assert_stored_mask(spec, server[1])
    assert np.array_equal(np.asarray(Image.open(spec.partition("=")[2])), np.asarray(Image.open(pictures["mask"])))


def test_gradio_background_is_kept_outside_the_subjects(client, pictures):
    images, _ = client.predict("a cat <img1> in a room", [ref("cat.jpg")], layout="boxes",
                               boxes=[[0.0, 0.0, 0.4, 0.4, "cat", "img1"]], background=handle_file(
                                   str(pictures["background"])), seed=7, **FAST, api_name="/generate")  # fmt: skip
    controls = subjects_of(images[0])
    assert controls["subjects"] == ["img1@box=0.0,0.0,0.4,0.4:cat"]
    assert Path(controls["background"]).name == "background.png"  # the caller's upload, in Gradio's folder
    out, background = np.asarray(Image.open(images[0])), np.asarray(Image.open(pictures["background"]))
    assert np.array_equal(out[40:, 40:], background[40:, 40:])  # far from the box: the background's own pixels


def test_gradio_all_three_and_the_preview(client, server, pictures):
    mask = [handle_file(str(pictures["mask"])), "her", "img2"]
    inputs = dict(layout="boxes", boxes3d=[SOLID], masks=[mask], background=handle_file(str(pictures["background"])))
    prompt, refs = "a cat <img1> with her <img2> in a room", [ref("cat.jpg"), ref("astronaut.jpg")]
    before = set((server[1] / "uploads").glob("mask-*.png"))
    sequence = client.predict(prompt, refs, **inputs, api_name="/preview")
    assert set((server[1] / "uploads").glob("mask-*.png")) == before  # a preview reads its masks and keeps none
    assert [p["image"] for p in sequence if "image" in p] == ["identities", "spatial"]  # both placed as subjects
    images, _ = client.predict(prompt, refs, seed=8, **inputs, **FAST, api_name="/generate")
    controls = subjects_of(images[0])
    assert controls["subjects"][0] == SOLID_SPEC and controls["background"]
    assert_stored_mask(controls["subjects"][1].replace("img2@", "img1@"), server[1])


def test_a_cancelled_call_keeps_no_mask(server, pictures):
    """The mask a call stored goes with the call: cancelled while it runs, it leaves neither a PNG nor a mask."""
    url, out, _jobs = server
    before, c = set((out / "uploads").glob("mask-*.png")), Client(url, verbose=False)
    job = c.submit("a cat <img1>", [ref("cat.jpg")], layout="boxes", masks=[[handle_file(str(pictures["mask"])), "",
                   "img1"]], seed=4646, steps=1000, size="64x64", api_name="/generate")  # fmt: skip
    deadline = time.monotonic() + 60
    while set((out / "uploads").glob("mask-*.png")) == before or job.status().code != Status.PROCESSING:
        assert time.monotonic() < deadline, "the job never started"
        threading.Event().wait(0.02)
    assert job.cancel()
    while set((out / "uploads").glob("mask-*.png")) != before:  # the job's last act, once it has stopped
        assert time.monotonic() < deadline + 60, "the cancelled job kept its mask"
        threading.Event().wait(0.02)
    c.close()
    assert not list(out.glob("sigma-*-4646-*.png"))


# -- REST -----------------------------------------------------------------------------------------------------------
def rest(server, files: list, **fields) -> httpx.Response:
    data = {"prompt": "a cat <img1> in a meadow", "layout": "boxes", "steps": "2", "size": "64x64"} | fields
    files = [("images", ("cat.jpg", (IMAGES / "cat.jpg").read_bytes(), "image/jpeg")), *files]
    return httpx.post(server[0] + "api/v1/generate", data=data, files=files, timeout=120)


def part(field: str, path: Path) -> tuple:
    return field, (path.name, path.read_bytes(), "image/png")


def png_of(reply: httpx.Response, k: int = 0) -> Image.Image:
    assert reply.status_code == 200, reply.text
    return Image.open(io.BytesIO(base64.b64decode(reply.json()["images"][k])))


def test_rest_multipart_boxes3d(server):
    png = png_of(rest(server, [], boxes3d=json.dumps([SOLID]), seed="15"))
    assert json.loads(png.info["sigma:record"])["controls"]["subjects"] == [SOLID_SPEC]


def test_rest_multipart_masks_name_their_file_parts(server, pictures):
    rows = json.dumps([["mask.png", "cat", "img1"]])
    reply = rest(server, [part("masks", pictures["mask"])], masks=rows, seed="16")
    (spec,) = json.loads(png_of(reply).info["sigma:record"])["controls"]["subjects"]
    assert_stored_mask(spec, server[1])


def test_rest_multipart_background(server, pictures):
    reply = rest(server, [part("background", pictures["background"])], boxes3d=json.dumps([SOLID]), seed="17")
    controls = json.loads(png_of(reply).info["sigma:record"])["controls"]
    assert controls["subjects"] == [SOLID_SPEC] and Path(controls["background"]).name == "background.png"
    out, background = np.asarray(png_of(reply)), np.asarray(Image.open(pictures["background"]))
    assert np.array_equal(out[:, 56:], background[:, 56:])  # right of the box: the background's own pixels


def test_rest_json_with_base64_mask_and_background(server, pictures):
    b64 = {name: base64.b64encode(pictures[name].read_bytes()).decode() for name in ("mask", "background")}
    body = {"prompt": "a cat <img1>", "images": [base64.b64encode((IMAGES / "cat.jpg").read_bytes()).decode()],
            "layout": "boxes", "masks": [[b64["mask"], "", "img1"]], "background": b64["background"], "seed": 18,
            **FAST}  # fmt: skip
    reply = httpx.post(server[0] + "api/v1/generate", json=body, timeout=120)
    controls = json.loads(png_of(reply).info["sigma:record"])["controls"]
    assert_stored_mask(controls["subjects"][0], server[1])
    assert controls["background"]


def test_openai_edit_takes_masks_as_file_parts(server, pictures):
    fields = {"prompt": "a cat <img1>", "size": "64x64", "steps": "2", "layout": "boxes",
              "masks": json.dumps([["mask.png", "cat", "img1"]])}  # fmt: skip
    files = [("image", ("cat.jpg", (IMAGES / "cat.jpg").read_bytes(), "image/jpeg")), part("masks", pictures["mask"])]
    reply = httpx.post(server[0] + "v1/images/edits", data=fields, files=files, timeout=120)
    assert reply.status_code == 200, reply.text
    assert_stored_mask(reply.json()["data"][0]["record"]["controls"]["subjects"][0], server[1])


# -- refusals -------------------------------------------------------------------------------------------------------
BAD = [  # (what the caller sends, the message): the same through both doors
    (dict(boxes3d=[[0, 0, 3, 0.8, 0.8]]), "3-D box 1 must be [cx, cy, cz, w, h, d, yaw, label, reference]"),
    (dict(boxes3d=[[0, 0, 3, "wide", 1, 1, 0, "", "img1"]]), "3-D box 1 must be [cx, cy, cz, w, h, d, yaw"),
    (dict(boxes3d=[[0, 0, 3, -1, 1, 1, 0, "", "img1"]]), "3-D box 1: width, height and depth must be positive"),
    (dict(boxes3d=[[0, 0, 3, 1, 1, 1, 0, "", "/etc/passwd"]]), "3-D box 1: the reference must be the name of a"),
    (dict(boxes3d=[[0, 0, 3, 1, 1, 1, 0, "cat", ""]]), "has no reference: once subjects are placed, give each"),
    (dict(boxes=[[0, 0, 1, 1, "", str(IMAGES / "cat.jpg")]]), "box 1: the reference must be the name of a given"),
    (dict(masks=[["@wide", "", "img1"]]), "mask 1 (wide.png) is 64x32, another shape than the 64x64 output"),
    (dict(masks=[["@empty", "", "img1"]]), "mask 1 (empty.png) has nothing in it"),
    (dict(masks=[["@notes", "", "img1"]]), "mask 1: Upload refused: notes.txt is not a readable image"),
    (dict(boxes3d=[SOLID], masks=[["@mask", "", "img1"]]), "Subject ids must be unique; repeated: img1"),
    (dict(boxes3d=[SOLID], background="@notes"), "background: Upload refused: notes.txt is not a readable image"),
    (dict(boxes=[[0, 0, 1, 1, "a box", ""]], background="@background"), "background keeps a picture outside the"),
    (dict(layout="none", boxes3d=[SOLID]), "boxes3d are read only with layout 'boxes' (layout is 'none')"),
]


def gradio_value(value, pictures):
    """A BAD value for gradio_client: "@name" is the upload of that picture."""
    if isinstance(value, str) and value.startswith("@"):
        return handle_file(str(pictures[value[1:]]))
    if isinstance(value, list):
        return [gradio_value(v, pictures) for v in value]
    return value


@pytest.mark.parametrize(("inputs", "message"), BAD)
def test_bad_subject_inputs_through_gradio(client, server, pictures, inputs, message):
    masks_before = set((server[1] / "uploads").glob("mask-*.png"))
    sent = {"layout": "boxes"} | {k: gradio_value(v, pictures) for k, v in inputs.items()}
    with pytest.raises(AppError) as caught:
        client.predict("a cat <img1>", [ref("cat.jpg")], seed=4242, **FAST, **sent, api_name="/generate")
    assert message in str(caught.value) and "\n" not in str(caught.value) and "Traceback" not in str(caught.value)
    assert not list(server[1].glob("sigma-*-4242-*.png"))
    assert set((server[1] / "uploads").glob("mask-*.png")) == masks_before  # a refused call saves no mask


@pytest.mark.parametrize(("inputs", "message"), BAD)
def test_bad_subject_inputs_through_rest(server, pictures, inputs, message):
    files, fields = [], {}
    for name, value in inputs.items():
        if name == "background":
            files.append(part("background", pictures[value[1:]]))
            continue
        if name == "masks":
            files += [part("masks", pictures[row[0][1:]]) for row in value]
            value = [[pictures[row[0][1:]].name, *row[1:]] for row in value]
        fields[name] = value if isinstance(value, str) else json.dumps(value)
    reply = rest(server, files, seed="4343", **fields)
    assert reply.status_code == 400 and message in reply.json()["error"], reply.text
    assert "\n" not in reply.json()["error"] and not list(server[1].glob("sigma-*-4343-*.png"))


@pytest.mark.parametrize(
    ("fields", "files", "status", "message"),
    [
        (dict(masks='[["mask.png", "", "img1"]]'), [], 422, "masks row 1 names 'mask.png', which is no masks file"),
        (dict(masks='[["mask.png", "", "img1"]]'), ["mask", "mask"], 422, "Two masks file parts have the same"),
        (dict(masks='[["dGV4dA==", "", "img1"]]'), ["mask"], 422, "The masks file part 'mask.png' is named by no row"),
        ({}, ["mask"], 422, 'masks in a form: one JSON text part, e.g. masks=[["cat-mask.png"'),
        (dict(masks="[[not json"), [], 422, "masks in a form: one JSON text part"),
        (dict(masks='[["not base64!", "", "img1"]]'), [], 422, "mask 1 is not valid base64"),
        (dict(masks='[[{"path": "/etc/passwd"}, "", "img1"]]'), [], 422, "mask 1 must be a file upload or a base64"),
        (dict(masks='{"a": 1}'), [], 422, "masks in a form: one JSON text part"),
        (dict(masks='[[]]'), [], 400, "mask 1 must be a row [mask, label, reference]"),
        (dict(boxes3d="[[1, 2"), [], 422, "boxes3d must be JSON text in a form"),
    ],
)  # fmt: skip
def test_rest_form_refusals(server, pictures, fields, files, status, message):
    reply = rest(server, [part("masks", pictures[name]) for name in files], seed="4444", **fields)
    assert reply.status_code == status and message in reply.json()["error"], reply.text
    assert "\n" not in reply.json()["error"]


def test_a_mask_must_be_an_upload_never_a_server_path(client, server, pictures):
    for mask in (str(IMAGES / "cat.jpg"), {"path": str(IMAGES / "cat.jpg")}):
        with pytest.raises(AppError, match=r"mask 1 must be an uploaded file: pass gradio_client.handle_file"):
            client.predict("a cat <img1>", [ref("cat.jpg")], layout="boxes", masks=[[mask, "", "img1"]],
                           api_name="/preview")  # fmt: skip
    with pytest.raises(AppError, match=r"background must be an uploaded file"):
        client.predict("a cat <img1>", [ref("cat.jpg")], layout="boxes", boxes3d=[SOLID],
                       background=str(pictures["background"]), api_name="/preview")  # fmt: skip
    reply = httpx.post(
        server[0] + "api/v1/generate",
        timeout=60,
        json={"prompt": "a cat", "layout": "boxes", "masks": [[str(IMAGES / "cat.jpg"), "", "img1"]]},
    )
    assert reply.status_code == 422 and "mask 1 is not valid base64" in reply.json()["error"]


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("python3") is None, reason="needs curl and python3")
def test_the_readmes_curl_examples(server, tmp_path):
    """The README's two curl commands, as written (python3 reads the answer), on the test server and its pictures."""
    section = (REPO / "README.md").read_text().split("## The web API", 1)[1].split("\n## ", 1)[0]
    script = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    assert script.count("| python3 -c") == 2 and "| python " not in script
    script = script.replace("http://127.0.0.1:7860/api/v1/generate", server[0] + "api/v1/generate -F steps=2")
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "room.jpg")
    mask = np.zeros((64, 64), np.uint8)
    mask[8:40, 8:40] = 255
    Image.fromarray(mask).save(tmp_path / "cat-mask.png")
    (tmp_path / "examples").symlink_to(REPO / "examples")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    sequence, subjects = done.stdout.strip().splitlines()
    assert "'image': 'img1'" in sequence and "'tokens': ['<id>']" in sequence
    assert re.fullmatch(r"\['img1@mask=\S+/uploads/" + MASK_NAME + r"'\]", subjects)


def test_hostile_values_of_the_new_fields_are_refused_in_one_line(client, server):
    """Server paths (plain, or dressed as Gradio's file data), numbers, nesting and long text in background,
    boxes3d and masks: every door answers with a one-line refusal (never a 500), and no server file is read."""
    secret = str(IMAGES / "cat.jpg")  # a picture the server has: read as a path, it would make a valid subject
    as_file = {"path": secret, "meta": {"_type": "gradio.FileData"}}
    values = [secret, "/etc/passwd", as_file, [[secret, "", "img1"]], [[as_file, "", "img1"]], [[secret]], 1e308]
    values += [-1, True, {}, [[[]]], "x" * 5000, [[0, 0, 3, 1, 1, 1, 0, "", secret]], [[1e308] * 7 + ["", "img1"]]]
    for name in ("background", "boxes3d", "masks"):
        for value in values:
            body = {"prompt": "a cat <img1>", "images": [base64.b64encode((IMAGES / "cat.jpg").read_bytes()).decode()],
                    "layout": "boxes", name: value, "seed": 4545, **FAST}  # fmt: skip
            reply = httpx.post(server[0] + "api/v1/generate", json=body, timeout=60)
            assert reply.status_code in (400, 422) and "\n" not in reply.json()["error"], (name, value, reply.text)
            with pytest.raises(AppError) as caught:
                client.predict("a cat <img1>", [ref("cat.jpg")], layout="boxes", **{name: value}, api_name="/preview")
            assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)
    assert not list(server[1].glob("sigma-*-4545-*.png"))
