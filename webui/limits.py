"""The web server's limits (docs/SECURITY.md), and the ASGI middleware that holds every request body to them.

Each limit is declared once, in :class:`WebLimits`, with the ``sigma webui`` flag that sets it. Bodies are counted as
they arrive, so a chunked body (no Content-Length) is stopped at the limit like any other; a body refused here is
answered ``413`` (too large) or ``400`` (nested too deeply, or too many values) with ``{"error": "<one line>"}`` and
never reaches Gradio or the REST route.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field, fields
from typing import NamedTuple

from sigma_studio.model.errors import InputError
from sigma_studio.model.request.prompt import MAX_PROMPT_CHARS

from .retention import KEEP_HOURS

REST_PATH = "/api/v1/generate"
STATUS_PATH = "/api/v1/status"
UPLOAD_PATH = "/gradio_api/upload"
COMPONENT_SERVER_PATH = "/gradio_api/component_server"  # a component's own functions (the mask editor's layers)
OPENAI_IMAGES = "/v1/images/"  # the OpenAI-compatible routes (webui/openai_api.py)


@dataclass(frozen=True)
class WebLimits:
    """What one request to the web server may hold. The flag of each field is ``--`` + its name with dashes."""

    max_prompt_chars: int = (
        MAX_PROMPT_CHARS  # characters of a prompt, checked before it is parsed (at most the model's)
    )
    max_request_mb: int = 200  # one REST request: every upload at its limit, base64 included
    max_event_kb: int = 512  # one page or Gradio API event (JSON; files travel as uploads, not in events)
    max_upload_mb: int = 20  # one uploaded file (a reference, a layout picture, a mask)
    max_megapixels: int = 50  # one uploaded picture, read from its header before it is decoded
    max_json_depth: int = 32  # nesting of a JSON body
    max_json_items: int = 20_000  # arrays, objects and separators of a JSON body (a parsed value takes ~24x its text)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"--{f.name.replace('_', '-')} must be a whole number from 1 (got {value!r})")
        if self.max_prompt_chars > MAX_PROMPT_CHARS:
            raise InputError(f"--max-prompt-chars may be at most the model's own limit, {MAX_PROMPT_CHARS}")

    def prompt_problem(self, prompt) -> str | None:
        """Why a prompt is refused before it is parsed (None: it is taken)."""
        if not isinstance(prompt, str):
            return f"The prompt must be text (got {type(prompt).__name__})"
        if len(prompt) > self.max_prompt_chars:
            return f"The prompt is {len(prompt)} characters; at most {self.max_prompt_chars} are accepted"
        return None

    def json_problem(self, body: bytes) -> str | None:
        """Why a JSON body is refused before it is parsed (None: it is taken): not UTF-8 text (``json.loads`` also
        reads UTF-16 and UTF-32, whose bytes the scan below would misread), nested deeper than ``max_json_depth``,
        or over ``max_json_items`` values (a body of tiny items, ``[0,0,...]``, costs far more memory parsed than its
        size says; pictures travel as base64 strings, one value each)."""
        if not utf8_text(body):
            return "The JSON body must be UTF-8 text"
        shape = json_shape(body, self.max_json_depth, self.max_json_items)
        if shape.depth > self.max_json_depth:
            return f"The JSON body nests deeper than {self.max_json_depth} levels"
        if shape.items > self.max_json_items:
            return f"The JSON body holds over {self.max_json_items} values; send fewer rows"
        return None

    @property
    def max_pixels(self) -> int:
        return self.max_megapixels * 1_000_000

    def body_limit(self, path: str) -> int:
        """The largest body, in bytes, a POST to ``path`` may send: an upload is one file (the page and
        gradio_client send one a request) with its form's few bytes; a REST or OpenAI call every file it names."""
        if path.rstrip("/") == UPLOAD_PATH:
            return (self.max_upload_mb + 1) * 2**20
        if path.rstrip("/") == REST_PATH or path.startswith(OPENAI_IMAGES):
            return self.max_request_mb * 2**20
        return self.max_event_kb * 2**10


@dataclass(frozen=True)
class WebSettings:
    """How the web server serves: the server options of ``sigma webui`` (its page, its API, its Ray ingress). Each
    default is declared here, once; the command's options and the server's functions read them."""

    outputs: str = "outputs/webui"  # where results are written (never overwritten)
    keep_hours: float = KEEP_HOURS
    limits: WebLimits = field(default_factory=WebLimits)
    api_key: str | None = None
    max_queue: int = 32  # jobs waiting beyond the running ones; past it a call is answered 429, the page's queue full
    slots: int = 1  # generations in flight at once (one pipeline; a pool or Ray's replicas set their own number)
    retries: int = 1  # Ray: a generation a replica dropped is tried again this many times
    host: str = "127.0.0.1"  # this machine only
    port: int = 7860  # Gradio's own


class BodyTooLarge(Exception):
    """Raised into the app when a streamed body passes its limit (the middleware answers 413 instead)."""


# a whole string (skipped in one match, escapes included; an unterminated one runs to the end, so no match is ever
# retried from inside a string: a body of escaped quotes stays linear), or a mark of structure outside strings
_JSON_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)|[\[\]{},]', re.DOTALL)


class JsonShape(NamedTuple):
    depth: int  # the deepest nesting of arrays and objects
    items: int  # arrays, objects and separators: about the number of values


def json_shape(body: bytes, max_depth: int | None = None, max_items: int | None = None) -> JsonShape:
    """How deeply a JSON text nests its arrays and objects, and how many it holds with their separators (marks
    inside strings do not count). Linear in the body, it never builds the value (so a hostile nesting costs no
    recursion), and it stops as soon as ``max_depth`` or ``max_items`` is passed."""
    depth = deepest = items = 0
    for token in _JSON_TOKENS.finditer(body):
        char = token.group()[:1]
        if char in (b"[", b"{"):
            depth += 1
            items += 1
            deepest = max(deepest, depth)
        elif char in (b"]", b"}"):
            depth -= 1
        elif char == b",":
            items += 1
        if (max_depth is not None and deepest > max_depth) or (max_items is not None and items > max_items):
            break
    return JsonShape(deepest, items)


_URL = re.compile(r"^\s*(https?://|data:)", re.IGNORECASE)
_DATA_URL = re.compile(r"^\s*data:", re.IGNORECASE)


def utf8_text(body: bytes) -> bool:
    """Whether ``body`` is UTF-8 text without NUL bytes (which JSON text never holds, and UTF-16 and UTF-32 do)."""
    if b"\x00" in body:
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def remote_file(body: bytes) -> str | None:
    """Why an event is refused for naming a file by URL (None: it names none). Gradio downloads a file whose
    ``path`` is a URL before any of our code runs, with no size limit, and decodes an image whose ``url`` is a
    ``data:`` URL into its cache, where nothing deletes it: a client could make the server fetch anything, or fill
    its disk. The page never sends either (its files are uploads, or the server's own paths). The parsed value is
    read, not the bytes, so no escape (``\\u0044``) hides a name."""
    try:
        stack = [json.loads(body)]  # (already held to the event's size, depth and values)
    except (ValueError, RecursionError):
        return None  # (not JSON: Gradio answers it)
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            path, url = item.get("path"), item.get("url")
            if (isinstance(path, str) and _URL.match(path)) or (isinstance(url, str) and _DATA_URL.match(url)):
                return "Files are not fetched from URLs: upload the file (gradio_client's handle_file of a local path)"
            stack.extend(item.values())
    return None


class BodyLimit:
    """ASGI middleware: every POST body is held to :meth:`WebLimits.body_limit` of its path while it is read, and a
    JSON body to :meth:`WebLimits.json_problem`. Install it with ``launch(app_kwargs={"middleware": [...]})``."""

    def __init__(self, app, limits: WebLimits):
        self.app, self.limits = app, limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        limit = self.limits.body_limit(path)
        headers = dict(scope.get("headers") or [])
        types = [value for name, value in scope.get("headers") or [] if name.lower() == b"content-type"]
        if len(types) > 1:  # (the server reads the first; a check that read another could be walked past)
            return await refuse(send, 400, "The request has more than one Content-Type header", path)
        declared = headers.get(b"content-length", b"").decode("latin-1").strip()
        if declared and (not declared.isdigit() or int(declared) > limit):
            return await refuse(send, 413, f"The request body is over the limit of {size_text(limit)}", path)
        if limit <= self.limits.max_event_kb * 2**10:  # an event: small, read whole and its JSON checked here
            return await self._buffered(scope, receive, send, limit, headers)
        return await self._streamed(scope, receive, send, limit, path)  # uploads, REST and OpenAI (their own JSON)

    async def _buffered(self, scope, receive, send, limit: int, headers: dict):
        """Read the whole (bounded) body, check its nesting, then hand it on."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            size += len(message.get("body", b""))
            if size > limit:
                return await refuse(send, 413, f"The request body is over the limit of {size_text(limit)}")
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        problem = event_problem(body, headers.get(b"content-type", b""), self.limits, scope.get("path", ""))
        if problem:
            return await refuse(send, 400, problem)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _streamed(self, scope, receive, send, limit: int, path: str):
        """Count a large (multipart) body as the app reads it; past the limit the app's answer is replaced."""
        size, over, started = 0, False, False

        async def counted():
            nonlocal size, over
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    over = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message):
            nonlocal started
            if over:
                return  # the app's own answer to a cut body; ours is sent below
            started = True
            await send(message)

        with contextlib.suppress(BodyTooLarge):  # the app may also catch it and answer: guarded_send drops that
            await self.app(scope, counted, guarded_send)
        if over and not started:
            await refuse(send, 413, f"The request body is over the limit of {size_text(limit)}", path)


def event_problem(body: bytes, content_type: bytes, limits: WebLimits, path: str = "") -> str | None:
    """Why an event's body is refused (None: it is taken). JSON (any type but a form's: Gradio reads its events as
    JSON whatever they say) is held to :meth:`WebLimits.json_problem` and :func:`remote_file`; a form posted to the
    component server (the mask editor's layers) is the editor's to check (webui/editor.py), and a form anywhere else
    is held to the JSON rules too (no event route reads one)."""
    kind = content_type.split(b";")[0].strip().lower()
    if kind == b"multipart/form-data" and path.rstrip("/") == COMPONENT_SERVER_PATH:
        return None
    return limits.json_problem(body) or remote_file(body)


async def refuse(send, status: int, message: str, path: str = "") -> None:
    """Answer ``status`` with ``message``, in the shape of the route asked: OpenAI's error object on its routes,
    the REST route's ``{"error": message}`` elsewhere."""
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    body = json.dumps({"error": error if path.startswith(OPENAI_IMAGES) else message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def size_text(n: int) -> str:
    return f"{n // 2**20} MB" if n >= 2**20 else f"{n // 2**10} KB"
