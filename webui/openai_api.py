"""OpenAI-compatible image routes on the web server, for the clients integrators already use::

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:7860/v1", api_key="-")
    result = client.images.edit(model="shapes", image=[open("a.png", "rb"), open("b.png", "rb")],
                                prompt="Draw the <subject>shape <img1> in the <style>colour of <img2>.")

- ``POST /v1/images/generations``: text only (JSON).
- ``POST /v1/images/edits``: the SIGMA call (multipart): the references are the ``image`` parts (``image[]`` as the
  official client sends a list), img1 first; the prompt places them with ``<imgN>`` and attribute tokens.
- ``GET /v1/models`` and ``GET /v1/models/{id}``: the one model this server runs.
- ``GET /v1/images/files/{name}``: an output of this server, for ``response_format="url"`` (nothing else is served).

OpenAI's fields are ``prompt``, ``n`` (1 to 4), ``size`` (``WxH`` or ``auto``), ``response_format`` (``b64_json`` or
``url``), ``model`` and ``user`` (unused); ``seed`` is ours. The other settings travel in ``extra_body`` (at the top
level of the JSON, as the SDK sends them, or nested under ``"extra_body"``) under the names of the web API
(:meth:`webui.api.SigmaApi.generate`: ``steps``, ``cfg_text``, ``speed``, ``layout``, ``boxes``, ``background``,
``masks``, ...; in a multipart edit, lists are JSON text, as on the REST route). Each image of the answer carries
its ``record``. Generation runs on the page's queue (one GPU pool, one cancel: a client that disconnects cancels its
job). Errors use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``; a full queue is a 429 with
Retry-After.
"""

from __future__ import annotations

import base64
import shutil
import time
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sigma_studio.model.errors import InputError, SigmaError

from .api import SigmaApi, holding, one_line
from .api_inputs import size_settings
from .api_params import AUTO_SIZE, COUNT, MAX_COUNT, RANDOM_SEED
from .guard import stored_output
from .jobs import Cancelled, Jobs
from .limits import BodyTooLarge, WebLimits, WebSettings
from .rest import (
    BUSY,
    CHALLENGE,
    FIELDS,
    FILE_FIELDS,
    RETRY_AFTER_S,
    RestError,
    form_fields,
    in_time,
    json_fields,
    key_refusal,
    saved,
    typed,
    until_disconnected,
)
from .retention import call_folder

PREFIX = "/v1"
OPENAI_FIELDS = ("prompt", "n", "size", "response_format", "seed", "model", "user")
# the web API's settings, by their names there (the rest map onto OpenAI's names above)
SIGMA_FIELDS = tuple(n for n in FIELDS if n not in ("self", "prompt", "images", "count", "seed", "size"))
RESPONSE_FORMATS = ("b64_json", "url")


class OpenAIError(Exception):
    """A refusal in OpenAI's error shape."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, kind: str | None = None):
        super().__init__(message)
        self.status, self.param = status, param
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def headers(self) -> dict | None:
        """A 429's Retry-After, a 401's challenge."""
        return {429: {"Retry-After": str(RETRY_AFTER_S)}, 401: CHALLENGE}.get(self.status)

    def response(self, headers: dict | None = None) -> JSONResponse:
        error = {"message": str(self), "type": self.kind, "param": self.param, "code": None}
        return JSONResponse({"error": error}, status_code=self.status, headers=headers)


def not_served(name: str, model_id: str) -> OpenAIError:
    return OpenAIError(f"model {name[:60]!r} is not served here; this server runs {model_id!r}", 404, param="model",
                       kind="not_found_error")  # fmt: skip


def refusal(exc: Exception) -> JSONResponse:
    """A failed images call as OpenAI's error answer (one line, never a trace)."""
    if isinstance(exc, OpenAIError):
        return exc.response(exc.headers())
    if isinstance(exc, RestError):  # (the shared readers' refusals: 400, or 413 for a prompt over its limit)
        return OpenAIError(str(exc), exc.status if exc.status in (408, 413) else 400).response()
    if isinstance(exc, Cancelled):
        return OpenAIError("Cancelled", 409).response()
    return OpenAIError(one_line(exc), 400 if isinstance(exc, SigmaError) else 500).response()


def check_key(request: Request, api_key: str | None) -> None:
    """Refuse a request without ``Authorization: Bearer <api_key>`` (when the server has a key)."""
    refusal = key_refusal(request, api_key)
    if refusal:
        raise OpenAIError(refusal, 401, kind="authentication_error")


def mount_openai(app, pipe, *, outputs: str | Path, jobs: Jobs, limits: WebLimits, api_key: str | None = None,
                 max_waiting: int = WebSettings.max_queue) -> None:  # fmt: skip
    """Serve the OpenAI-compatible routes on ``app`` through ``jobs`` (the page's queue); at most ``max_waiting``
    jobs wait beyond the running ones before a call is answered 429."""
    api, model_id = SigmaApi(pipe, outputs=outputs, jobs=jobs, limits=limits), pipe.name

    async def images(request: Request, edit: bool) -> JSONResponse:
        folder = call_folder(outputs)
        try:
            check_key(request, api_key)
            token = jobs.reserve(max_waiting)  # before the body is read; counted at once, so a burst cannot overfill
            if token is None:
                raise OpenAIError(BUSY, 429, kind="rate_limit_error")
            reading = in_time(read(request, edit, folder, model_id, limits))
            inputs, response_format = await holding(jobs, token, reading)  # (then the job's run holds it)
            paths, records = await until_disconnected(request, api.run(inputs, token))
        except BodyTooLarge:
            raise  # the server's middleware answers 413, in this route's shape
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line for the caller
            return refusal(exc)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return JSONResponse(answer(request, paths, records, response_format))

    async def generations(request: Request) -> JSONResponse:
        return await images(request, edit=False)

    async def edits(request: Request) -> JSONResponse:
        return await images(request, edit=True)

    entry = {"id": model_id, "object": "model", "created": 0, "owned_by": "sigma-studio"}

    async def models(request: Request, name: str | None = None) -> JSONResponse:  # and client.models.retrieve(name)
        try:
            check_key(request, api_key)
            if name is not None and name != model_id:
                raise not_served(name, model_id)
        except OpenAIError as exc:
            return exc.response(exc.headers())
        return JSONResponse(entry if name is not None else {"object": "list", "data": [entry]})

    async def image_file(name: str):
        path = stored_output(name, outputs)
        if path is None:
            return OpenAIError(f"No image {name[:80]} on this server", 404, kind="not_found_error").response()
        try:  # opened now: a sweep of old results between the check and the answer is a 404, not a server error
            data = path.read_bytes()
        except OSError:
            return OpenAIError(f"No image {name[:80]} on this server", 404, kind="not_found_error").response()
        return Response(data, media_type="image/png", headers={"x-content-type-options": "nosniff"})

    app.add_api_route(f"{PREFIX}/images/generations", generations, methods=["POST"], summary="OpenAI: generate")
    app.add_api_route(f"{PREFIX}/images/edits", edits, methods=["POST"], summary="OpenAI: generate from references")
    app.add_api_route(f"{PREFIX}/models", models, methods=["GET"], summary="OpenAI: the served model")
    app.add_api_route(f"{PREFIX}/models/{{name}}", models, methods=["GET"], summary="OpenAI: the served model, by id")
    app.add_api_route(f"{PREFIX}/images/files/{{name}}", image_file, methods=["GET"], summary="An output PNG")


async def read(request: Request, edit: bool, folder: Path, model_id: str, limits: WebLimits) -> tuple[dict, str]:
    """(the web API's inputs, the response format) of a generations or edits call."""
    fields = await (edit_fields(request) if edit else body_fields(request, limits))
    return await inputs_of(fields, folder, model_id, edit, limits)


async def body_fields(request: Request, limits: WebLimits) -> dict:
    """A generations request: one JSON object."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise OpenAIError("images/generations takes a JSON body (content-type: application/json)")
    return json_fields(await request.body(), limits)


async def edit_fields(request: Request) -> dict:
    """An edits request: a multipart form (the REST route's reader), its ``image`` / ``image[]`` parts in order."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        raise OpenAIError("images/edits takes a multipart form with one 'image' part per reference")
    return await form_fields(request, files=("image", "image[]"))


async def inputs_of(fields: dict, folder: Path, model_id: str, edit: bool, limits: WebLimits) -> tuple[dict, str]:
    """(the web API's inputs, the response format) of an OpenAI request's fields."""
    fields = flattened(fields)
    unknown = sorted(set(fields) - {"images"} - set(OPENAI_FIELDS) - set(SIGMA_FIELDS))
    if unknown:
        hint = " (in a multipart edit, give lists as JSON text)" if "[" in unknown[0] else ""
        raise OpenAIError(f"Unknown field {unknown[0][:60]}{hint}; OpenAI's fields here are "
                          f"{', '.join(OPENAI_FIELDS)}, and extra_body takes {', '.join(SIGMA_FIELDS)}",
                          param=unknown[0][:60])  # fmt: skip
    prompt = fields.get("prompt")
    if prompt is None:
        raise OpenAIError("prompt is missing: write what to generate", param="prompt")
    problem = limits.prompt_problem(prompt)  # (the REST route's rule: text, and 413 over its length)
    if problem:
        raise OpenAIError(problem, 413 if isinstance(prompt, str) else 400, param="prompt")
    model = fields.get("model")
    if model not in (None, "", model_id):
        raise not_served(str(model), model_id)
    response_format = fields.get("response_format") or "b64_json"
    if response_format not in RESPONSE_FORMATS:
        raise OpenAIError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}", param="response_format")
    images = fields.get("images") or []
    if edit and not images:
        raise OpenAIError("images/edits needs at least one image part; use images/generations for text alone",
                          param="image")  # fmt: skip
    named = {"prompt": prompt, "count": count_of(fields.get("n")), "seed": fields.get("seed", RANDOM_SEED)}
    named["size"] = fields.get("size") or AUTO_SIZE
    try:
        size_settings(named["size"])
    except InputError as exc:
        raise OpenAIError(str(exc), param="size") from None
    inputs = {n: p.default for n, p in FIELDS.items() if n != "self" and p.default is not p.empty}
    for name, value in named.items():
        inputs[name] = value if name == "prompt" else typed(name, value)
    for name in SIGMA_FIELDS:
        if name in fields:
            value = fields[name]
            inputs[name] = await saved(name, value, folder) if name in FILE_FIELDS else typed(name, value)
    if images:
        if not all(isinstance(v, UploadFile) for v in images):
            raise OpenAIError("each image must be a file part of the form", param="image")
        inputs["images"] = await saved("images", images, folder)
    return inputs, response_format


def flattened(fields: dict) -> dict:
    """The fields with a literal ``extra_body`` object's merged in: the OpenAI SDK sends ``extra_body`` at the top
    level of the JSON, and a hand-written request may nest it as the SDK's argument is named."""
    extra = fields.get("extra_body")
    if extra is None:
        return fields
    if not isinstance(extra, dict):
        raise OpenAIError('extra_body must be an object of settings, e.g. {"steps": 30}', param="extra_body")
    twice = sorted(set(extra) & set(fields))
    if twice:
        raise OpenAIError(f"{twice[0][:60]} is given both at the top level and in extra_body", param=twice[0][:60])
    return {k: v for k, v in fields.items() if k != "extra_body"} | extra


def count_of(n) -> int:
    """OpenAI's ``n``: 1 to :data:`MAX_COUNT` images (null: 1, as OpenAI takes it)."""
    if n is None:
        return COUNT
    if isinstance(n, str) and n.strip().isdigit():  # a multipart form's field
        n = int(n)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_COUNT:
        raise OpenAIError(f"n must be a whole number from 1 to {MAX_COUNT} (got {str(n)[:40]})", param="n")
    return n


def answer(request: Request, paths: list[str], records: list[dict], response_format: str) -> dict:
    """OpenAI's ImagesResponse, each image with its record."""
    data = []
    for path, record in zip(paths, records, strict=True):
        item = {"revised_prompt": None, "record": record}
        if response_format == "url":
            item["url"] = str(request.base_url).rstrip("/") + f"{PREFIX}/images/files/{Path(path).name}"
        else:
            item["b64_json"] = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        data.append(item)
    height, width = (records[0]["config"].get("size") or [0, 0]) if records else (0, 0)
    return {"created": int(time.time()), "data": data, "output_format": "png", "size": f"{width}x{height}"}
