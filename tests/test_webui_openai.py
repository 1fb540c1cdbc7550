"""The OpenAI-compatible routes through the official ``openai`` client, against a live server on the shapes model.

Generations, edits with two references (the README's call: a blue triangle), n = 3, the error shape, the API key,
``response_format="url"``, a full queue, and 20 concurrent clients each getting its own seed's picture, pixel for
pixel the picture the pipeline makes for that seed. Skipped without gradio or openai.
"""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")
openai = pytest.importorskip("openai")

import httpx  # noqa: E402  (a gradio dependency)
from PIL import Image  # noqa: E402

from tests.conftest import live_server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHAPES = REPO / "examples" / "shapes"
KEY = "sk-sigma-test"
MAX_QUEUE = 24  # jobs that may wait beyond the running one (20 concurrent clients fit)
FAST = {"steps": 4}  # extra_body: the shapes model at few steps (a fraction of a second a picture)
COMPOSE = "Draw the <subject>shape <img1> in the <style>colour of <img2>."


@pytest.fixture(scope="module")
def shapes_pipe():
    from sigma_studio.model import load_pipeline

    return load_pipeline("shapes")


@pytest.fixture(scope="module")
def server(tmp_path_factory, shapes_pipe):
    """(base URL, outputs, jobs) of `sigma webui --model shapes --api-key KEY`, started as that command starts it."""
    out = tmp_path_factory.mktemp("webui-openai")
    with live_server(shapes_pipe, out, api_key=KEY, max_queue=MAX_QUEUE) as (url, jobs, _demo):
        yield url, out, jobs


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=300) as c:
        yield c


def pipeline_picture(pipe, prompt: str, seed: int) -> np.ndarray:
    """What the pipeline makes for ``prompt`` at ``seed`` (FAST steps, 64 px): the picture a call must return."""
    from sigma_studio.model import GenerationConfig, build_request

    config = GenerationConfig(steps=FAST["steps"], size=(64, 64), seed=seed)
    return np.asarray(pipe(build_request(prompt, arch=pipe.arch, config=config)).image.convert("RGB"))


def picture(item) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(item.b64_json))).convert("RGB")


def test_generations_text_only(client):
    result = client.images.generate(model="shapes", prompt="a red circle", size="64x64", extra_body={"seed": 3, **FAST})
    (item,) = result.data
    record = item.model_extra["record"]
    assert picture(item).size == (64, 64) and result.size == "64x64"
    assert record["prompt"] == "a red circle" and record["config"]["seed"] == 3 and record["config"]["steps"] == 4


def test_edits_with_two_references_is_the_readme_call(client, shapes_pipe):
    from sigma_studio.model import GenerationConfig, build_request
    from sigma_studio.model.shapes.evaluate import read

    with open(SHAPES / "yellow-triangle.png", "rb") as a, open(SHAPES / "blue-circle.png", "rb") as b:
        result = client.images.edit(model="shapes", image=[a, b], prompt=COMPOSE, extra_body={"seed": 0})
    (item,) = result.data
    record = item.model_extra["record"]
    assert [img["name"] for img in record["images"] if img["role"] == "reference"] == ["img1", "img2"]
    # the same picture the pipeline (and so the CLI) makes for this request and seed
    refs = {"img1": str(SHAPES / "yellow-triangle.png"), "img2": str(SHAPES / "blue-circle.png")}
    direct = shapes_pipe(build_request(COMPOSE, refs, arch=shapes_pipe.arch, config=GenerationConfig(seed=0)))
    assert np.array_equal(np.asarray(picture(item)), np.asarray(direct.image.convert("RGB")))
    reading = read(picture(item))
    assert (reading.shape, reading.colour) == ("triangle", "blue")  # the README's claim, through the OpenAI route


def test_n_images_one_per_seed_and_urls_serve_only_outputs(client, server):
    result = client.images.generate(
        prompt="a green square", n=3, size="64x64", response_format="url", extra_body={"seed": 40, **FAST}
    )
    assert [item.model_extra["record"]["config"]["seed"] for item in result.data] == [40, 41, 42]
    for item in result.data:
        served = httpx.get(item.url, timeout=60)
        assert served.status_code == 200 and Image.open(io.BytesIO(served.content)).size == (64, 64)
    assert httpx.get(server[0] + "/v1/images/files/..%2F..%2Fetc%2Fpasswd", timeout=60).status_code == 404
    refused = httpx.get(server[0] + "/v1/images/files/passwd", timeout=60)
    assert refused.status_code == 404 and refused.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    "call, error, message",
    [
        (dict(prompt="a", extra_body={"nosuch": 1}), "BadRequestError", "Unknown field nosuch"),
        (dict(prompt="a", size="1024x1024"), "BadRequestError", "over this model's limit of 64"),
        (dict(prompt="a", n=5), "BadRequestError", "n must be a whole number from 1 to 4 (got 5)"),
        (dict(prompt="a", response_format="png"), "BadRequestError", "response_format must be one of"),
        (dict(prompt="a", model="gpt-image-1"), "NotFoundError", "is not served here; this server runs 'shapes'"),
        (dict(prompt="a", extra_body={"cfg_text": 1e308}), "BadRequestError", "must be from 0 to 100"),
        (dict(prompt="a <img1>"), "BadRequestError", "img1"),
    ],
)
def test_errors_are_one_line_in_openais_shape_and_write_nothing(client, server, call, error, message):
    before = set(server[1].glob("*.png"))
    with pytest.raises(getattr(openai, error)) as caught:
        client.images.generate(**call)
    body = caught.value.body
    assert message in body["message"] and "\n" not in body["message"] and body["type"].endswith("_error")
    assert set(server[1].glob("*.png")) == before


def test_edits_need_images_and_lists_as_json_text(client):
    with pytest.raises(openai.BadRequestError, match="lists as JSON text"):
        with open(SHAPES / "blue-circle.png", "rb") as a:
            client.images.edit(image=[a], prompt="a <subject> <img1>", extra_body={"tokens": [["<subject>"]]})


def test_the_key_is_required_on_the_api_routes_not_on_the_page(server):
    url = server[0]
    with openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError, match="Incorrect or missing API key"):
            wrong.models.list()
    assert httpx.post(url + "/api/v1/generate", json={"prompt": "a"}, timeout=60).status_code == 401
    assert httpx.get(url + "/", timeout=60).status_code == 200


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list()] == ["shapes"]


def test_a_full_queue_is_a_429_with_retry_after(server):
    url, _, jobs = server
    tokens = [jobs.reserve(10**6) for _ in range(jobs.concurrency + MAX_QUEUE)]  # the queue is full
    try:
        reply = httpx.post(url + "/v1/images/generations", json={"prompt": "a"},
                           headers={"authorization": f"Bearer {KEY}"}, timeout=60)  # fmt: skip
    finally:
        for token in tokens:
            jobs.discard(token)
    assert reply.status_code == 429 and reply.headers["retry-after"].isdigit()
    assert reply.json()["error"]["type"] == "rate_limit_error"


def test_twenty_concurrent_clients_each_get_their_own_seeds_picture(server, shapes_pipe):
    def call(seed: int) -> np.ndarray:
        with openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=600) as c:
            result = c.images.generate(prompt="a blue star", size="64x64", extra_body={"seed": seed, **FAST})
        return np.asarray(picture(result.data[0]))

    seeds = list(range(100, 120))
    with ThreadPoolExecutor(20) as pool:
        got = list(pool.map(call, seeds))
    for seed, image in zip(seeds, got, strict=True):
        assert np.array_equal(image, pipeline_picture(shapes_pipe, "a blue star", seed)), f"seed {seed}"


def test_status_reports_the_model_the_queue_and_the_work_done(server, client):
    url, _out, jobs = server
    assert httpx.get(url + "/api/v1/status", timeout=60).status_code == 401  # behind the key, as the API routes
    client.images.generate(prompt="a red circle", size="64x64", extra_body={"seed": 1, **FAST})
    got = httpx.get(url + "/api/v1/status", headers={"Authorization": f"Bearer {KEY}"}, timeout=60).json()
    assert (got["model"], got["mode"], got["slots"]) == ("shapes", "cpu", 1)
    assert got["live"] == jobs.live and got["runs"] == {"0": jobs.runs[0]} and jobs.runs[0] >= 1


def test_a_hand_written_request_may_nest_extra_body_and_null_n_and_gets_param_named_errors(server):
    url, out, _ = server
    key = {"authorization": f"Bearer {KEY}"}
    call = {"prompt": "a red star", "n": None, "seed": 3, "extra_body": {"steps": 2}}
    made = httpx.post(url + "/v1/images/generations", json=call, headers=key, timeout=120)
    assert made.status_code == 200, made.text
    assert [d["record"]["config"]["steps"] for d in made.json()["data"]] == [2]
    for body, status, param in (({"prompt": "a", "steps": 2, "extra_body": {"steps": 3}}, 400, "steps"),
                                ({"prompt": "a", "size": "big"}, 400, "size"), ({"prompt": "a", "n": 0}, 400, "n"),
                                ({"prompt": "x" * 20_001}, 413, "prompt")):  # fmt: skip
        refused = httpx.post(url + "/v1/images/generations", json=body, headers=key, timeout=60)
        assert refused.status_code == status and refused.json()["error"]["param"] == param, refused.text
    anonymous = httpx.get(url + "/v1/models", timeout=60)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(url + "/v1/models/shapes", headers=key, timeout=60).json()["id"] == "shapes"
    other = httpx.get(url + "/v1/models/gpt-image-1", headers=key, timeout=60)
    assert other.status_code == 404 and other.json()["error"]["type"] == "not_found_error"
