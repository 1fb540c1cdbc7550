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

The parameters are declared once in :mod:`webui.api_params`; their values are checked by :mod:`webui.api_inputs`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import shutil
import threading
from collections.abc import Awaitable
from dataclasses import replace
from pathlib import Path

import gradio as gr
from gradio.data_classes import FileData

from sigma_studio.model.errors import InputError, SigmaError

from . import handlers as h
from .api_inputs import (
    checked_file,
    checked_tokens,
    forget_masks,
    layout_of,
    mask_row,
    rows_of,
    size_settings,
    stored_masks,
    uploaded,
)
from .api_params import COUNT, GENERATE_PARAMS, MAX_COUNT, PREVIEW_PARAMS, C, G, arguments, takes
from .jobs import Cancelled, Jobs
from .limits import WebLimits
from .retention import UPLOADS, call_folder
from .state import MAX_SLOTS, Slot, UIState, set_tokens

log = logging.getLogger(__name__)
ENDPOINTS = ("generate", "preview")
MESSAGE_CHARS = 500  # the most of a failure's message a caller gets back (it may echo what the caller sent)
PREVIEWS_AT_ONCE = 2  # /preview calls served at once (each decodes up to six references, a layout and masks)


def with_uploads(inputs: dict) -> dict:
    """The endpoint's inputs with its files (Gradio uploads) as server paths."""
    images = inputs.get("images") or []
    if not isinstance(images, list):
        raise InputError("images must be a list of uploaded files, img1 first")
    paths = [uploaded(f, f"img{k}") for k, f in enumerate(images, start=1)]
    rows = rows_of(inputs.get("masks"), "masks", mask_row)
    masks = [[uploaded(row[0], f"mask {k}"), *row[1:]] for k, row in enumerate(rows, start=1)]
    files = {n: uploaded(inputs.get(n), n) for n in ("layout_image", "background")}
    return inputs | files | {"images": paths, "masks": masks or None}


def state_of(prompt: str, paths: list[str], tokens: list[list[str] | None]) -> UIState:
    """The page's state for these inputs: one filled slot per image, and each token list applied as the page's
    token dropdown of that slot applies it (:func:`state.set_tokens` rewrites the prompt)."""
    state = UIState(prompt or "", tuple(Slot(image=p) for p in paths) or (Slot(),))
    for k, chosen in enumerate(tokens):
        if chosen is not None:
            state = set_tokens(state, k, chosen)
    return state


def one_line(exc: BaseException) -> str:
    """The plain-text, one-line message a caller gets for a failure (never a stack trace)."""
    if isinstance(exc, Cancelled):
        return "Cancelled"
    if isinstance(exc, SigmaError) and len(str(exc)) > 4 * MESSAGE_CHARS:  # (its text is shown: cut it first, as
        exc = InputError(str(exc)[: 4 * MESSAGE_CHARS])  # it may echo a caller's value at any length)
    message = str(exc.message)[: 4 * MESSAGE_CHARS] if isinstance(exc, gr.Error) else h.message_of(exc)
    line = " ".join(message.split())
    return line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 1] + "…"


async def holding(jobs: Jobs, token: str | None, work: Awaitable):
    """``await work`` (a call's reading or checking, before its job runs) for the job ``token`` stands for: if it
    fails, or the call is cancelled meanwhile, the place ``token`` holds in the queue goes back."""
    try:
        return await work
    except BaseException:
        jobs.discard(token)
        raise


async def run_job(jobs: Jobs, fn, *args, token: str | None = None):
    """``fn(token, *args)`` in its own thread under ``token`` (a fresh ``jobs`` token by default; one given is the
    job's from here on, discarded when it ends). Cancelling the awaiting task (a Gradio client's ``job.cancel()``)
    cancels the job: while it waits for the queue it never starts."""
    token = token or jobs.submit()
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
        finally:  # a job that failed before it reached the queue's slot (ZeroGPU's quota) must not stay live
            jobs.discard(token)
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
        self.uploads = self.outputs / UPLOADS  # the page's folder for its uploads and masks
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
            think: the model writes a plan, then draws with it (its text is in the record's plan); null: as the model
                was trained
            canny_low: Canny low threshold
            canny_high: Canny high threshold
            canny_blur: Gaussian blur before Canny (odd; 0 = none)
            background: with layout boxes: a picture kept outside the placed subjects
            boxes3d: with layout boxes: rows [cx, cy, cz, w, h, d, yaw, label, reference] (camera metres, degrees)
            masks: with layout boxes: rows [mask, label, reference]; mask: an uploaded picture, the subject in white
        Returns:
            the PNG files (each carries its record) and the records (settings, seed and the sequence the model got)
        """
        inputs = arguments(GENERATE_PARAMS, args, kwargs)
        copies = call_folder(self.outputs)  # a very large upload's downscaled copy, removed as the call ends
        try:
            paths, records = await self.run(with_uploads(inputs), copies=copies)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line of text for the caller
            raise gr.Error(one_line(exc), print_exception=False) from None
        finally:
            shutil.rmtree(copies, ignore_errors=True)
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
            background: with layout boxes: a picture kept outside the placed subjects
            boxes3d: with layout boxes: rows [cx, cy, cz, w, h, d, yaw, label, reference] (camera metres, degrees)
            masks: with layout boxes: rows [mask, label, reference]; mask: an uploaded picture, the subject in white
        Returns:
            one entry per part: {"text": ...} or {"image", "role", "tokens", "size"}
        """
        inputs = arguments(PREVIEW_PARAMS, args, kwargs)
        copies = call_folder(self.outputs)
        try:
            return self.request(with_uploads(inputs), preview=True, copies=copies)[0].sequence()
        except Exception as exc:  # noqa: BLE001
            raise gr.Error(one_line(exc), print_exception=False) from None
        finally:
            shutil.rmtree(copies, ignore_errors=True)

    def request(self, inputs: dict, *, preview: bool = False, copies: Path | None = None):
        """(the page's request for these inputs, count). Checks everything; reads the uploads (server paths),
        writes nothing but a downscaled copy of a very large upload (in ``copies``, the call's folder its caller
        removes; default: beside the upload) and the masks (under ``<outputs>/uploads``, as the page saves its
        masks)."""
        self.check_prompt(inputs["prompt"], inputs.get("images") or [])
        images = enumerate(inputs.get("images") or [], start=1)
        paths = [checked_file(f, f"img{k}", self.limits, copies) for k, f in images]
        state = state_of(inputs["prompt"], paths, checked_tokens(inputs.get("tokens"), len(paths)))
        canny = tuple(int(inputs.get(k, getattr(C, k))) for k in ("canny_low", "canny_high", "canny_blur"))
        image, background = (
            checked_file(inputs.get(n), n, self.limits, copies) for n in ("layout_image", "background")
        )
        layout = layout_of(inputs.get("layout") or "none", image, inputs.get("boxes"), canny, background=background,
                           boxes3d=inputs.get("boxes3d"), masks=inputs.get("masks"))  # fmt: skip
        count = inputs.get("count", COUNT)
        if isinstance(count, bool) or not isinstance(count, int | float) or count not in range(1, MAX_COUNT + 1):
            raise InputError(f"count must be a whole number from 1 to {MAX_COUNT} (got {count!r})")
        config = G if preview else h.settings_config(self.settings(inputs), self.pipe.arch.max_image_size)
        masks = stored_masks(layout, config.size, self.pipe.arch, self.uploads, self.limits, copies)
        try:
            request = h.request_of(state, replace(layout, masks=masks), config, self.pipe.arch, preview=preview)
        except BaseException:
            forget_masks([f"@mask={row[0]}" for row in masks], self.uploads)  # a refused request keeps none
            raise
        if preview:  # a preview returns the sequence alone: its masks were read, and go
            forget_masks(request.controls.subjects, self.uploads)
        return request, int(count)

    def check_prompt(self, prompt, images: list) -> None:
        if not isinstance(prompt, str):
            raise InputError(f"prompt must be text (got {type(prompt).__name__})")
        if len(prompt) > self.limits.max_prompt_chars:
            raise InputError(
                f"The prompt is {len(prompt)} characters; at most {self.limits.max_prompt_chars} are accepted"
            )
        if len(images) > MAX_SLOTS:
            raise InputError(f"{len(images)} images were given; the page takes at most {MAX_SLOTS} references")

    def settings(self, inputs: dict) -> dict:
        """The inputs as the page's settings (the names :func:`handlers.settings_config` reads)."""
        names = ("steps", "cfg_text", "cfg_img", "cfg_low", "cfg_high", "renorm", "shift", "seed", "speed", "think")
        settings = {k: inputs[k] for k in names} | size_settings(inputs["size"])
        group_mask = inputs["group_mask"]
        settings["group_mask"] = self.pipe.arch.group_mask if group_mask is None else group_mask
        return settings  # (a fraction of steps or seed is refused by handlers.settings_config, never truncated)

    async def run(
        self, inputs: dict, token: str | None = None, copies: Path | None = None
    ) -> tuple[list[str], list[dict]]:
        """Check the inputs (off the event loop), then generate in the shared queue: (PNG paths, records). A
        ``token`` the caller reserved (:meth:`Jobs.reserve`) is the job's, and is given back however this ends;
        ``copies``: :meth:`request`'s."""
        checking = asyncio.to_thread(functools.partial(self.request, inputs, copies=copies))
        request, count = await holding(self.jobs, token, checking)
        return await run_job(self.jobs, self._generate_images, request, count, token=token)

    def _run(self, token: str, request, count: int) -> tuple[list[str], list[dict]]:
        try:
            paths, records, _seeds, _last = h.run_request(
                self.pipe, request, self.outputs, count=count, jobs=self.jobs, token=token
            )
        except Cancelled as exc:  # the caller gets none of them: a cancelled call writes nothing
            for path, _record in exc.kept:
                Path(path).unlink(missing_ok=True)
            forget_masks(request.controls.subjects, self.uploads)
            raise
        except Exception:
            forget_masks(request.controls.subjects, self.uploads)  # (what the caller never gets needs no mask)
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
    # a preview decodes its uploads but generates nothing: a few at once, in their own group
    gr.api(api.preview, api_name="preview", concurrency_id="preview", concurrency_limit=PREVIEWS_AT_ONCE)
    return api
