"""``POST /api/v1/generate``: the API's generate endpoint for plain HTTP callers, on the page's generation queue.

JSON (images as base64 PNG/JPEG/WebP, data URLs accepted)::

    curl -s http://127.0.0.1:7860/api/v1/generate -H 'content-type: application/json' \\
        -d '{"prompt": "a cat <img1>", "images": ["'"$(base64 -w0 cat.jpg)"'"], "steps": 30}'

or multipart (``images`` repeated, one file each; ``tokens``, ``boxes``, ``boxes3d`` and ``masks`` as JSON text; a
mask row names a file part ``masks`` by its file name, where JSON gives the mask as base64)::

    curl -s http://127.0.0.1:7860/api/v1/generate -F prompt='a cat <img1>' -F images=@cat.jpg -F steps=30
    curl -s http://127.0.0.1:7860/api/v1/generate -F prompt='a cat <img1> on a sofa' -F images=@cat.jpg \
        -F layout=boxes -F background=@room.jpg -F 'masks=[["cat-mask.png", "cat", "img1"]]' -F masks=@cat-mask.png

The fields are those of the Gradio endpoint ``/generate`` (:meth:`webui.api.SigmaApi.generate`), by name and with
its defaults. The answer is ``{"images": [base64 PNG, ...], "records": [...]}``; an error is
``{"error": "<one line>"}`` with status 422 (the request is malformed) or 400 (the inputs are refused).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import inspect
import json
import re
import shutil
import typing
from pathlib import Path
from types import UnionType

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from sigma_studio.model.errors import SigmaError

from .api import SigmaApi, holding, one_line
from .api_inputs import mask_row, rows_of
from .jobs import Cancelled, Jobs
from .limits import REST_PATH, STATUS_PATH, BodyTooLarge, WebLimits
from .retention import INCOMING, call_folder, clean_incoming

FILE_FIELDS = ("images", "layout_image", "background", "masks")  # saved under the request's folder before use
JSON_FIELDS = ("tokens", "boxes", "boxes3d", "masks")  # lists: JSON text in a multipart form
ROW_FILES = ("masks",)  # in a form: JSON rows whose first column names a file part sent under the same name
BODY_READ_S = 300.0  # a call's body must arrive within this (200 MB at 0.7 MB/s); then 408
RETRY_AFTER_S = 10  # a 429's Retry-After, when the queue is full
BUSY = "The server is busy: retry later"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="sigma-studio"'}  # a 401's header (RFC 6750)
FIELDS = inspect.signature(SigmaApi.generate).parameters
HINTS = typing.get_type_hints(SigmaApi.generate)


class RestError(Exception):
    """A request this route cannot read (status 422), or one refused for another reason."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


async def in_time(reading, seconds: float | None = None):
    """``await reading`` (a call's body read and checked), refused with 408 past ``seconds`` (default
    :data:`BODY_READ_S`): a client that sends its body a byte at a time holds its place in the queue no longer."""
    seconds = BODY_READ_S if seconds is None else seconds
    try:
        return await asyncio.wait_for(reading, seconds)
    except asyncio.TimeoutError:  # (TimeoutError itself from Python 3.11)
        raise RestError(f"The request body did not arrive within {seconds:.0f} s", 408) from None


def key_refusal(request: Request, api_key: str | None) -> str | None:
    """Why a request lacks the server's key (None: it has it, or the server has none). The key travels as
    ``Authorization: Bearer <key>``, on the REST and OpenAI routes; the page stays open."""
    if api_key is None:
        return None
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
        return "Incorrect or missing API key: send the header Authorization: Bearer <key>"
    return None


def mount_rest(
    app, pipe, *, outputs: str | Path, jobs: Jobs, max_waiting: int, limits: WebLimits | None = None,
    api_key: str | None = None,
) -> None:  # fmt: skip
    """Serve ``POST /api/v1/generate`` on ``app`` (the Gradio server's FastAPI app), through ``jobs``: the queue
    the page and the Gradio API use, so a REST call waits for their generations and they wait for it; with
    ``max_waiting`` jobs waiting beyond the running ones, a call is answered 429 before its body is read. A caller
    that disconnects cancels its job (waiting, it never starts; running, it stops at its next step and writes
    nothing)."""
    limits = limits or WebLimits()
    api = SigmaApi(pipe, outputs=outputs, jobs=jobs, limits=limits)
    incoming = Path(outputs) / INCOMING
    clean_incoming(incoming)

    async def generate(request: Request) -> JSONResponse:
        folder = call_folder(outputs)
        refusal = key_refusal(request, api_key)
        if refusal:
            return JSONResponse({"error": refusal}, status_code=401, headers=CHALLENGE)
        token = jobs.reserve(max_waiting)  # before the body is read; counted at once, so a burst cannot overfill
        if token is None:
            return JSONResponse({"error": BUSY}, status_code=429, headers={"Retry-After": str(RETRY_AFTER_S)})
        try:
            reading = in_time(read_inputs(request, folder, limits))
            inputs = await holding(jobs, token, reading)  # (then the job's run holds it)
            paths, records = await until_disconnected(request, api.run(inputs, token))
        except BodyTooLarge:
            raise  # the server's middleware answers 413
        except RestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except Cancelled:
            return JSONResponse({"error": "Cancelled"}, status_code=409)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line of text for the caller
            status = 400 if isinstance(exc, SigmaError) else 500
            return JSONResponse({"error": one_line(exc)}, status_code=status)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        images = [base64.b64encode(Path(p).read_bytes()).decode("ascii") for p in paths]
        return JSONResponse({"images": images, "records": records})

    async def status(request: Request) -> JSONResponse:
        refusal = key_refusal(request, api_key)
        if refusal:
            return JSONResponse({"error": refusal}, status_code=401, headers=CHALLENGE)
        return JSONResponse(server_status(pipe, jobs))

    app.add_api_route(REST_PATH, generate, methods=["POST"], summary="Generate images (JSON or multipart)")
    app.add_api_route(STATUS_PATH, status, methods=["GET"], summary="The model, the queue and who generated")


def server_status(pipe, jobs: Jobs) -> dict:
    """``GET /api/v1/status``: the model, the queue, and the generations each pipeline (each GPU of ``--gpus``)
    or each Ray Serve replica has done, for a health check or a dashboard."""
    remote = getattr(pipe, "runs", None)  # a RemotePipeline counts by replica id
    runs = remote() if callable(remote) else {str(k): n for k, n in enumerate(jobs.runs)}
    return {"model": pipe.name, "mode": pipe.mode, "slots": jobs.concurrency, "live": jobs.live, "runs": runs}


async def until_disconnected(request: Request, work):
    """``await work``, cancelling it (and so its job in the queue) when the caller disconnects first."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.5)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Cancelled):  # its end, whichever came first
                await task
            raise Cancelled


async def read_inputs(request: Request, folder: Path, limits: WebLimits | None = None) -> dict:
    """The request's fields, typed as the Gradio endpoint types them, over its defaults; uploads saved in
    ``folder``. The body's size is held to ``limits`` by the server's middleware (webui/limits.py), chunked or not."""
    limits = limits or WebLimits()
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        fields = await form_fields(request)
    else:
        fields = json_fields(await request.body(), limits)
    unknown = sorted(set(fields) - set(FIELDS) - {"self"})
    if unknown:
        raise RestError(
            f"Unknown field {unknown[0][:60]}; the fields are: {', '.join(n for n in FIELDS if n != 'self')}"
        )
    if "prompt" not in fields:
        raise RestError("prompt is missing: write what to generate (it may be empty text with images)")
    problem = limits.prompt_problem(fields["prompt"]) if isinstance(fields["prompt"], str) else None
    if problem:  # (a prompt that is not text is refused by its type below)
        raise RestError(problem, 413)
    inputs = {n: p.default for n, p in FIELDS.items() if p.default is not inspect.Parameter.empty}
    for name, value in fields.items():
        inputs[name] = await saved(name, value, folder) if name in FILE_FIELDS else typed(name, value)
    return inputs


def json_fields(body: bytes, limits: WebLimits) -> dict:
    """The JSON object of a body; one nested beyond ``max_json_depth`` or holding over ``max_json_items`` values is
    refused before it is parsed (:meth:`WebLimits.json_problem`)."""
    problem = limits.json_problem(body)
    if problem:
        raise RestError(problem, 400)
    try:
        fields = json.loads(body)  # (never deeper than max_json_depth here: no recursion to exhaust)
    except ValueError:
        raise RestError("The body is not JSON: send a JSON object, or a multipart form") from None
    if not isinstance(fields, dict):
        raise RestError("The body must be a JSON object with the fields by name")
    return fields


async def form_fields(request: Request, files: tuple[str, ...] = ("images",)) -> dict:
    """A multipart (or url-encoded) form: the parts named in ``files`` may repeat and are gathered, in order, as
    ``images``; ``masks`` is JSON text with its pictures as file parts (:func:`rows_naming_parts`); any other field
    is given once (``tokens``, ``boxes`` and ``boxes3d`` as JSON text)."""
    try:
        form = await request.form()
    except HTTPException as exc:  # starlette's reading of a malformed or oversized form
        raise RestError(f"The form cannot be read: {exc.detail}") from None
    fields: dict = {"images": [v for k, v in form.multi_items() if k in files]} if any(k in files for k in form) else {}
    for name in dict.fromkeys(k for k in form.keys() if k not in files):
        values = form.getlist(name)
        if name in ROW_FILES:
            fields[name] = rows_naming_parts(name, values)
            continue
        if len(values) > 1:
            raise RestError(f"{name[:60]} is given {len(values)} times; only {files[0]} may repeat")
        if name in JSON_FIELDS and isinstance(values[0], str):
            try:
                fields[name] = json.loads(values[0]) if values[0].strip() else None
            except ValueError:
                raise RestError(f'{name} must be JSON text in a form, e.g. tokens=[["<id>"]]') from None
        else:
            fields[name] = values[0]
    return fields


def rows_naming_parts(name: str, values: list) -> list | None:
    """A form's ``masks``: one text part, the JSON rows, and the pictures as file parts of the same name; a row
    whose first column is a part's file name takes that part (any other first column is read as base64)."""
    texts = [v for v in values if isinstance(v, str)]
    parts = {Path(v.filename or "").name: v for v in values if not isinstance(v, str)}
    usage = (f'{name} in a form: one JSON text part, e.g. {name}=[["cat-mask.png", "cat", "img1"]], and each picture '
             f"as a file part {name}=@cat-mask.png")  # fmt: skip
    try:
        rows = json.loads(texts[0]) if len(texts) == 1 and texts[0].strip() else None
    except ValueError:
        raise RestError(usage) from None
    if len(texts) != 1 or not isinstance(rows, list | None) or (parts and rows is None):
        raise RestError(usage)
    if len(parts) < len(values) - len(texts):
        raise RestError(f"Two {name} file parts have the same file name: name each apart")
    firsts = [row[0] if isinstance(row, list) and row and isinstance(row[0], str) else None for row in rows or []]
    for k, first in enumerate(firsts, start=1):
        if first and "." in first and first not in parts:  # a file name (base64 has no dot), of no part
            raise RestError(f"{name} row {k} names {first[:60]!r}, which is no {name} file part of the form "
                            f"(parts: {', '.join(parts)[:120] or 'none'})")  # fmt: skip
    unused = sorted(set(parts) - set(firsts))
    if unused:
        raise RestError(f"The {name} file part {unused[0][:60]!r} is named by no row: put its file name in its row")
    if rows is None:
        return None
    return [[parts[first], *row[1:]] if first in parts else row for first, row in zip(firsts, rows, strict=True)]


async def saved(name: str, value, folder: Path) -> list | str | None:
    """Uploads (files, or base64 text) written to ``folder``; the paths, named as the caller named them. ``masks``
    stay rows, each with its mask's path."""
    if name == "images":
        values = value if isinstance(value, list) else [value]
        return [await save_one(v, folder / str(k), f"img{k}") for k, v in enumerate(values, start=1)]
    if name == "masks":
        rows = rows_of(value, "masks", mask_row)
        paths = [await save_one(r[0], folder / f"mask{k}", f"mask {k}", f"mask{k}") for k, r in enumerate(rows, 1)]
        return [[path, *row[1:]] for path, row in zip(paths, rows, strict=True)] or None
    return None if value in (None, "") else await save_one(value, folder / name, name)


async def save_one(value, folder: Path, what: str, name: str | None = None) -> str:
    """One upload written to ``folder``: a form's file part under its own name when that is plain, else (and
    base64 text always) under ``name`` (default ``what``, the value's name in messages)."""
    folder.mkdir(parents=True)
    if isinstance(value, UploadFile):  # the caller's file name is kept (messages name it) only when it is plain
        given = Path(value.filename or "").name
        plain = re.fullmatch(r"[\w\- ][\w.\- ]{0,99}", given) and not given.startswith(".")
        path = folder / (given if plain else name or what)
        path.write_bytes(await value.read())
        return str(path)
    if not isinstance(value, str):
        raise RestError(f"{what} must be a file upload or a base64 string (got {type(value).__name__})")
    text = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RestError(f"{what} is not valid base64: send the file's bytes base64-encoded") from None
    path = folder / (name or what)
    path.write_bytes(data)
    return str(path)


def typed(name: str, value):
    """A field's value as the endpoint's type hint says (form fields arrive as text)."""
    hint = HINTS[name]
    options = typing.get_args(hint) if isinstance(hint, UnionType) or typing.get_origin(hint) is typing.Union else ()
    optional = type(None) in options
    kind = next((t for t in options if t is not type(None)), hint)
    if value is None or (optional and value == ""):
        if optional:
            return None
        raise RestError(f"{name} may not be null")
    if typing.get_origin(kind) is typing.Literal:
        kind = str
    if typing.get_origin(kind) is list:
        if not isinstance(value, list):
            raise RestError(f"{name} must be a list")
        return value
    return scalar(name, value, kind)


def scalar(name: str, value, kind: type):
    bad = RestError(f"{name} must be {'a whole number' if kind is int else 'a ' + kind.__name__} (got {value!r})")
    if kind is str:
        if not isinstance(value, str):
            raise bad
        return value
    if kind is bool:
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in words:
            return words[value.strip().lower()]
        raise bad
    if isinstance(value, bool):
        raise bad
    try:  # text as the exact kind: a float would round a 19-digit seed
        number = (int if kind is int else float)(value.strip()) if isinstance(value, str) else value
    except ValueError:
        raise bad from None
    if not isinstance(number, int | float) or (kind is int and not float(number).is_integer()):
        raise bad
    return int(number) if kind is int else float(number)
