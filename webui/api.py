"""The web UI's documented API: named ``gr.api`` endpoints on the page's generation queue (REST: ``webui/rest.py``).

``sigma webui`` serves both (README, "The web API")::

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    images, records = client.predict(prompt="...", images=[handle_file("a.jpg")], api_name="/generate")

    curl -X POST http://127.0.0.1:7860/api/v1/generate -H 'content-type: application/json' -d '{"prompt": "..."}'

Both build the request with the page's builder (:func:`handlers.request_of`, the page's state after the same token
changes) and generate through :func:`handlers.run_request` with the page's :class:`~webui.jobs.Jobs`, so the page,
the Gradio API and the REST route share one queue (and, with ``sigma webui --gpus``, its pool of one pipeline per
GPU: each job runs on a free one). A caller that cancels a job (``job.cancel()``) cancels it in
that queue too: while it waits it never starts, while it runs it stops at its next denoising step.
"""

from __future__ import annotations

import asyncio
import contextvars
import difflib
import inspect
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import FileData
from gradio.utils import get_upload_folder, is_in_or_equal

from sigma_studio.model import GenerationConfig
from sigma_studio.model.config import DEFAULT_SPEED, RenormType
from sigma_studio.model.errors import InputError
from sigma_studio.model.request.structure import ControlSpec
from sigma_studio.model.request.tokens import ATTRIBUTE_TOKENS

from . import handlers as h
from .jobs import Cancelled, Jobs
from .limits import WebLimits
from .state import MAX_SLOTS, Slot, UIState, set_tokens

log = logging.getLogger(__name__)
G, C = GenerationConfig(), ControlSpec()  # every default of the API comes from these dataclasses
MAX_COUNT = 4  # images per call, one per seed (the page's "number of images")
SIZE_RE = re.compile(r"^\s*(\d{1,6})\s*[x×]\s*(\d{1,6})\s*$")
ENDPOINTS = ("generate", "preview")


@dataclass(frozen=True)
class ApiParam:
    """One parameter of the API's endpoints, and so a field of the REST and OpenAI routes: its name, its type hint
    (``gr.api`` documents and checks the value by it; the REST route converts form text by it) and its default
    (none: the caller must give it)."""

    name: str
    hint: Any
    default: Any = inspect.Parameter.empty

    def parameter(self) -> inspect.Parameter:
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        return inspect.Parameter(self.name, kind, default=self.default, annotation=self.hint)


# the API's parameters, declared once: /preview takes the request's prompt, references and layout, /generate those
# and the settings; a default is the dataclasses' own (GenerationConfig, ControlSpec) where they have the setting
PREVIEW_PARAMS: tuple[ApiParam, ...] = (
    ApiParam("prompt", str),
    ApiParam("images", list[FileData] | None, None),
    ApiParam("tokens", list[list[str]] | None, None),
    ApiParam("layout", str, "none"),
    ApiParam("layout_image", FileData | None, None),
    ApiParam("boxes", list[list] | None, None),
)
GENERATE_PARAMS: tuple[ApiParam, ...] = (
    *PREVIEW_PARAMS,
    ApiParam("steps", int, G.steps),
    ApiParam("cfg_text", float, G.cfg_text_scale),
    ApiParam("cfg_img", float, G.cfg_img_scale),
    ApiParam("cfg_low", float, G.cfg_interval[0]),
    ApiParam("cfg_high", float, G.cfg_interval[1]),
    ApiParam("renorm", RenormType, G.cfg_renorm_type),
    ApiParam("shift", float, G.timestep_shift),
    ApiParam("seed", int, -1),  # -1: drawn (the pipeline's seed None)
    ApiParam("size", str, "auto"),
    ApiParam("group_mask", bool | None, None),  # None: the model's own setting
    ApiParam("count", int, 1),
    ApiParam("speed", str, DEFAULT_SPEED),
    ApiParam("canny_low", int, C.canny_low),
    ApiParam("canny_high", int, C.canny_high),
    ApiParam("canny_blur", int, C.canny_blur),
)


def takes(params: tuple[ApiParam, ...]):
    """Declare that the decorated endpoint ``fn(self, *args, **kwargs)`` takes ``params``: they become its
    signature and type hints (what ``gr.api`` documents and calls it with, and what the REST route reads), while
    its return annotation stays its own. The endpoint reads its call with :func:`arguments`."""

    def declare(fn):
        own = inspect.signature(fn)
        fn.__signature__ = own.replace(parameters=[own.parameters["self"], *(p.parameter() for p in params)])
        fn.__annotations__ = {p.name: p.hint for p in params} | {"return": fn.__annotations__["return"]}
        return fn

    return declare


def arguments(params: tuple[ApiParam, ...], args: tuple, kwargs: dict) -> dict:
    """A call's arguments by name, over the defaults of ``params`` (a call Python would refuse is a TypeError)."""
    bound = inspect.Signature([p.parameter() for p in params]).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def uploaded(value: FileData | dict | None, what: str) -> str | None:
    """The server path of a file the caller uploaded through Gradio. Anything else (a bare path, a dict Gradio did
    not check) is refused, so that no caller makes the server read a file of its own."""
    if value is None:
        return None
    path = value.path if isinstance(value, FileData) else None
    if isinstance(value, dict) and (value.get("meta") or {}).get("_type") == "gradio.FileData":
        path = value.get("path")
    if not isinstance(path, str) or not is_in_or_equal(path, get_upload_folder()):
        raise InputError(f"{what} must be an uploaded file: pass gradio_client.handle_file(PATH)")
    return path


def with_uploads(inputs: dict) -> dict:
    """The endpoint's inputs with its files (Gradio uploads) as server paths."""
    images = inputs.get("images") or []
    if not isinstance(images, list):
        raise InputError("images must be a list of uploaded files, img1 first")
    paths = [uploaded(f, f"img{k}") for k, f in enumerate(images, start=1)]
    return inputs | {"images": paths, "layout_image": uploaded(inputs.get("layout_image"), "layout_image")}


def checked_file(path: str | None, what: str, limits: WebLimits) -> str | None:
    """The path of an upload to use, as the page takes uploads: a very large picture is downscaled into a copy
    beside it; an unreadable or oversized file is refused with the page's message."""
    if path is None:
        return None
    usable, message = h.prepare_upload(path, Path(path).parent, limits)
    if usable is None:
        raise InputError(f"{what}: Upload refused: {message}")
    return usable


def checked_tokens(tokens: list[list[str]] | None, n_images: int) -> list[list[str] | None]:
    """One token list per image (None: the tokens written in the prompt), every token a known attribute token."""
    if tokens is None:
        return []
    if not isinstance(tokens, list | tuple):
        raise InputError(f'tokens must be one list per image, such as [["<id>"], ["<subject>"]] (got {tokens!r})')
    if len(tokens) > n_images:
        raise InputError(f"{len(tokens)} token lists for {n_images} image(s): give one list per image, in order")
    out: list[list[str] | None] = []
    for k, chosen in enumerate(tokens, start=1):
        chosen = [chosen] if isinstance(chosen, str) else chosen
        if chosen is not None and not isinstance(chosen, list | tuple):
            raise InputError(f'tokens for img{k} must be a list such as ["<id>"] (got {chosen!r})')
        for token in chosen or []:
            if token not in ATTRIBUTE_TOKENS:
                close = difflib.get_close_matches(str(token), ATTRIBUTE_TOKENS, n=1)
                hint = f" Did you mean {close[0]}?" if close else ""
                raise InputError(
                    f"Unknown token {token} for img{k}.{hint} Attribute tokens are: {' '.join(ATTRIBUTE_TOKENS)}"
                )
        out.append(None if chosen is None else list(chosen))
    return out


def state_of(prompt: str, paths: list[str], tokens: list[list[str] | None]) -> UIState:
    """The page's state for these inputs: one filled slot per image, and each token list applied as the page's
    token dropdown of that slot applies it (:func:`state.set_tokens` rewrites the prompt)."""
    state = UIState(prompt or "", tuple(Slot(image=p) for p in paths) or (Slot(),))
    for k, chosen in enumerate(tokens):
        if chosen is not None:
            state = set_tokens(state, k, chosen)
    return state


def box_row(row, k: int) -> list:
    """One box as the page's table row ``[x0, y0, x1, y1, label, reference]``; the label and reference may be left
    out."""
    usage = f"box {k} must be [x0, y0, x1, y1, label, reference] with x0..y1 from 0 to 1"
    if not isinstance(row, list | tuple) or not 4 <= len(row) <= 6:
        raise InputError(f"{usage} (got {row!r})")
    try:
        coords = [float(v) for v in row[:4]]
    except (TypeError, ValueError):
        raise InputError(f"{usage} (got {row!r})") from None
    if not all(0.0 <= v <= 1.0 for v in coords):
        raise InputError(f"{usage} (got {row!r})")
    label, ref = (str(v or "") for v in [*row[4:], "", ""][:2])
    return [*coords, label, ref]


def layout_of(kind: str, image: str | None, boxes: list[list] | None, canny: tuple[int, int, int]) -> h.LayoutInputs:
    """The layout tab's values: ``image`` is the Canny source, or the ready depth map."""
    if kind not in h.LAYOUT_KINDS:
        raise InputError(f"layout '{kind}' is not one of {', '.join(h.LAYOUT_KINDS)}")
    if kind in ("canny", "depth") and not image:
        what = "the picture whose edges lay out the image" if kind == "canny" else "a ready depth map"
        raise InputError(f"layout '{kind}' needs layout_image: {what}")
    if boxes and kind != "boxes":
        raise InputError(f"boxes are read only with layout 'boxes' (layout is '{kind}')")
    if kind == "boxes" and not boxes:
        raise InputError("layout 'boxes' needs boxes: rows [x0, y0, x1, y1, label, reference] with x0..y1 in 0..1")
    rows = [box_row(row, k) for k, row in enumerate(boxes or [], start=1)]
    canny_image, depth_map = (image, None) if kind == "canny" else (None, image if kind == "depth" else None)
    return h.LayoutInputs(kind, canny_image, *canny, None, depth_map, rows)


def size_settings(size: str) -> dict:
    """``auto``, a page preset (``4:3``) or ``WxH`` as the page's preset / width / height settings."""
    size = str(size or "auto").strip()
    if size == "auto" or size in h.SIZE_PRESETS:
        return {"preset": size, "width": 0, "height": 0}
    m = SIZE_RE.match(size)
    if not m:
        shown = size if len(size) <= 40 else size[:37] + "…"
        raise InputError(f"size '{shown}' is not auto, WxH (e.g. 768x512) or one of {', '.join(h.SIZE_PRESETS)}")
    return {"preset": "custom", "width": int(m.group(1)), "height": int(m.group(2))}


def one_line(exc: BaseException) -> str:
    """The plain-text, one-line message a caller gets for a failure (never a stack trace)."""
    if isinstance(exc, Cancelled):
        return "Cancelled"
    message = exc.message if isinstance(exc, gr.Error) else h.message_of(exc)
    return " ".join(str(message).split())


async def run_job(jobs: Jobs, fn, *args):
    """``fn(token, *args)`` in its own thread under a fresh ``jobs`` token. Cancelling the awaiting task (a Gradio
    client's ``job.cancel()``) cancels the job: while it waits for the queue it never starts."""
    token = jobs.submit()
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    context = contextvars.copy_context()  # the request's context (ZeroGPU reads it)

    def settle(result, error) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)

    def target() -> None:
        try:
            result, error = context.run(fn, token, *args), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the server stopped meanwhile: nobody awaits the result any more
            return

    threading.Thread(target=target, name="sigma-api-job", daemon=True).start()
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        jobs.cancel(token)
        done.add_done_callback(lambda f: f.exception())  # its outcome (Cancelled) is nobody's to report
        raise


class SigmaApi:
    """The API's endpoints around a loaded pipeline (its architecture builds the requests); generation goes through
    ``jobs`` (the page's queue), on the pipeline of the slot it gets when ``jobs`` pools several."""

    def __init__(self, pipe, *, outputs: str | Path, jobs: Jobs, gpu_wrapper=None, limits: WebLimits | None = None):
        self.pipe, self.outputs, self.jobs, self.limits = pipe, Path(outputs), jobs, limits or WebLimits()
        self._generate_images = gpu_wrapper(self._run) if gpu_wrapper is not None else self._run

    @takes(GENERATE_PARAMS)
    async def generate(self, *args, **kwargs) -> tuple[list[FileData], list[dict]]:
        """Generate `count` images (seeds seed, seed+1, ...) from a SIGMA prompt and its reference images.

        Args:
            prompt: the interleaved prompt; <img1>, <img2>, ... place the images, attribute tokens bind to the next one
            images: the reference images img1, img2, ... in order
            tokens: attribute tokens per image, e.g. [["<id>"], ["<subject>"]]; null keeps the prompt's own
            layout: none | canny | depth | boxes
            layout_image: the picture traced by canny, or a ready depth map
            boxes: rows [x0, y0, x1, y1, label, reference] with x0..y1 in 0..1 and reference img1, img2, ... or ""
            steps: denoising steps
            cfg_text: text guidance scale
            cfg_img: image guidance scale
            cfg_low: guidance applies from t > cfg_low
            cfg_high: guidance applies to t <= cfg_high
            renorm: guidance renormalisation
            shift: timestep shift
            seed: the first seed; -1 draws one (the records give every seed used)
            size: auto (the last reference's size), WxH, or a preset such as 4:3
            group_mask: group-scoped attention mask; null uses the model's own setting
            count: images to make, one per seed (1 to 4)
            speed: exact | fast (the guidance branches evaluated every few steps; docs/PERF.md)
            canny_low: Canny low threshold
            canny_high: Canny high threshold
            canny_blur: Gaussian blur before Canny (odd; 0 = none)
        Returns:
            the PNG files (each carries its record) and the records (settings, seed and the sequence the model got)
        """
        inputs = arguments(GENERATE_PARAMS, args, kwargs)
        try:
            paths, records = await self.run(with_uploads(inputs))
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line of text for the caller
            raise gr.Error(one_line(exc), print_exception=False) from None
        return [FileData(path=p, orig_name=Path(p).name, mime_type="image/png") for p in paths], records

    @takes(PREVIEW_PARAMS)
    def preview(self, *args, **kwargs) -> list[dict]:
        """The sequence the model would receive (text pieces, and images with their role and tokens); no generation.

        Args:
            prompt: the interleaved prompt, as for generate
            images: the reference images img1, img2, ... in order
            tokens: attribute tokens per image; null keeps the prompt's own
            layout: none | canny | depth | boxes
            layout_image: the picture traced by canny, or a ready depth map
            boxes: rows [x0, y0, x1, y1, label, reference] with x0..y1 in 0..1
        Returns:
            one entry per part: {"text": ...} or {"image", "role", "tokens", "size"}
        """
        inputs = arguments(PREVIEW_PARAMS, args, kwargs)
        try:
            return self.request(with_uploads(inputs), preview=True)[0].sequence()
        except Exception as exc:  # noqa: BLE001
            raise gr.Error(one_line(exc), print_exception=False) from None

    def request(self, inputs: dict, *, preview: bool = False):
        """(the page's request for these inputs, count). Checks everything; reads the uploads (server paths),
        writes nothing but a downscaled copy of a very large upload."""
        prompt = inputs["prompt"]
        if not isinstance(prompt, str):
            raise InputError(f"prompt must be text (got {type(prompt).__name__})")
        if len(prompt) > self.limits.max_prompt_chars:
            raise InputError(
                f"The prompt is {len(prompt)} characters; at most {self.limits.max_prompt_chars} are accepted"
            )
        if len(inputs.get("images") or []) > MAX_SLOTS:
            raise InputError(
                f"{len(inputs['images'])} images were given; the page takes at most {MAX_SLOTS} references"
            )
        paths = [checked_file(f, f"img{k}", self.limits) for k, f in enumerate(inputs.get("images") or [], start=1)]
        state = state_of(inputs["prompt"], paths, checked_tokens(inputs.get("tokens"), len(paths)))
        canny = tuple(int(inputs.get(k, getattr(C, k))) for k in ("canny_low", "canny_high", "canny_blur"))
        image = checked_file(inputs.get("layout_image"), "layout_image", self.limits)
        layout = layout_of(inputs.get("layout") or "none", image, inputs.get("boxes"), canny)
        count = inputs.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int | float) or count not in range(1, MAX_COUNT + 1):
            raise InputError(f"count must be a whole number from 1 to {MAX_COUNT} (got {count!r})")
        config = G if preview else h.settings_config(self.settings(inputs), self.pipe.arch.max_image_size)
        return h.request_of(state, layout, config, self.pipe.arch, preview=preview), int(count)

    def settings(self, inputs: dict) -> dict:
        """The inputs as the page's settings (the names :func:`handlers.settings_config` reads)."""
        names = ("steps", "cfg_text", "cfg_img", "cfg_low", "cfg_high", "renorm", "shift", "seed", "speed")
        settings = {k: inputs[k] for k in names} | size_settings(inputs["size"])
        group_mask = inputs["group_mask"]
        settings["group_mask"] = self.pipe.arch.group_mask if group_mask is None else group_mask
        return settings  # (a fraction of steps or seed is refused by handlers.settings_config, never truncated)

    async def run(self, inputs: dict) -> tuple[list[str], list[dict]]:
        """Check the inputs (off the event loop), then generate in the shared queue: (PNG paths, records)."""
        request, count = await asyncio.to_thread(self.request, inputs)
        return await run_job(self.jobs, self._generate_images, request, count)

    def _run(self, token: str, request, count: int) -> tuple[list[str], list[dict]]:
        try:
            paths, records, _seeds, _last = h.run_request(
                self.pipe, request, self.outputs, count=count, jobs=self.jobs, token=token
            )
        except Cancelled as exc:  # the caller gets none of them: a cancelled call writes nothing
            for path, _record in exc.kept:
                Path(path).unlink(missing_ok=True)
            raise
        return paths, records


def register_api(
    pipe, *, outputs: str | Path, jobs: Jobs, gpu_wrapper=None, limits: WebLimits | None = None
) -> SigmaApi:
    """Add the named endpoints ``/generate`` and ``/preview``; call inside the page's ``gr.Blocks`` context.

    ``/generate`` joins the page's "gpu" concurrency group, with the queue's limit, and holds a ``jobs`` slot while
    it generates, like the page and the REST route.
    """
    api = SigmaApi(pipe, outputs=outputs, jobs=jobs, gpu_wrapper=gpu_wrapper, limits=limits)
    gr.api(api.generate, api_name="generate", concurrency_id="gpu", concurrency_limit=jobs.concurrency)
    gr.api(api.preview, api_name="preview", concurrency_limit=None)
    return api
