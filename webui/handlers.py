"""Widget values -> state / configs -> pipeline calls; SigmaError -> gr.Error. No layout here."""

from __future__ import annotations

import html
import logging
import re
import uuid
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image

from sigma_studio.model import ControlSpec, GenerationConfig, SigmaError, build_request
from sigma_studio.model.config import DEFAULT_SPEED, speed_every
from sigma_studio.model.errors import InputError
from sigma_studio.model.files import atomic_write
from sigma_studio.model.images import open_image, to_rgb
from sigma_studio.model.request.control import estimate_depth
from sigma_studio.model.request.tokens import ATTRIBUTE_TOKENS

from . import depth
from .api_params import AUTO_SIZE, COUNT, RANDOM_SEED
from .display import browser_text, colour_routing
from .jobs import Jobs
from .limits import WebLimits
from .placements import (
    box3d_rows,
    box_rows,
    mask_rows,
)
from .runs import batches, on_device, run_request  # noqa: F401 - the handlers' API: the server and tests call them
from .state import UIState

log = logging.getLogger(__name__)
SIZE_PRESETS = {
    "1:1": (1024, 1024),
    "4:3": (1024, 768),
    "3:4": (768, 1024),
    "16:9": (1024, 576),
    "9:16": (576, 1024),
}
LAYOUT_KINDS = ("none", "canny", "depth", "boxes")  # the layout tab's choices
UPLOAD_MAX_SIDE = 4096  # larger uploads are downscaled to this long side (the model resizes to 1024 anyway)


def prepare_upload(path: str, folder: Path, limits: WebLimits | None = None) -> tuple[str | None, str]:
    """(the path to use, a message) for an uploaded reference: a large picture is downscaled into ``folder``
    (the message says so); an unreadable or oversized file gives (None, why). The number of pixels is read from
    the file's header and checked before anything is decoded."""
    img, problem = _opened(path, limits or WebLimits())
    if img is None:
        return None, problem
    if max(img.size) <= UPLOAD_MAX_SIDE:
        return path, ""
    before = f"{img.width}×{img.height}"
    img = to_rgb(img)
    img.thumbnail((UPLOAD_MAX_SIDE, UPLOAD_MAX_SIDE), Image.LANCZOS)
    folder.mkdir(parents=True, exist_ok=True)
    smaller = folder / f"{Path(path).stem[:64]}-{uuid.uuid4().hex[:8]}.png"
    atomic_write(smaller, lambda f: img.save(f, format="PNG"))
    return str(smaller), f"{name_of(path)} was downscaled from {before} to {img.width}×{img.height}"


def upload_problem(path: str, limits: WebLimits | None = None) -> str | None:
    """Why an uploaded file cannot be used (None when it can): over the size limit, over the pixel limit (read
    from its header, before decoding), or not a readable picture. The message names the file, never its path."""
    img, problem = _opened(path, limits or WebLimits())
    return None if img is not None else f"Upload refused: {problem}"


def _opened(path: str, limits: WebLimits) -> tuple[Image.Image | None, str]:
    """(the decoded picture, "") of an upload within ``limits``, or (None, why not): the file's size and its
    header's pixel count are checked first, so a picture over the limit is never decoded."""
    name = name_of(path)
    unreadable = unreadable_message(name)
    try:
        if Path(path).stat().st_size > limits.max_upload_mb * 2**20:
            return None, f"{name} is over {limits.max_upload_mb} MB; upload a smaller file"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # reads the header only
                width, height = img.size
    except Image.DecompressionBombError:
        width = height = limits.max_pixels  # far over any limit: PIL refused even to read on
    except (OSError, SyntaxError, ValueError):
        return None, unreadable
    if width * height > limits.max_pixels:
        return None, f"{name} has over {limits.max_megapixels} megapixels; resize it before uploading"
    try:
        return open_image(path, max_pixels=limits.max_pixels), ""
    except InputError:
        return None, unreadable


def unreadable_message(name: str) -> str:
    """What an upload that is no picture is told (the name as :func:`name_of` gives it)."""
    return f"{name} is not a readable image; use a PNG, JPEG or WebP picture"


def name_of(path: str) -> str:
    """A file's name as a message shows it (bounded: a name is the caller's text)."""
    name = Path(path).name
    return name if len(name) <= 60 else name[:57] + "…"


@dataclass(frozen=True)
class LayoutInputs:
    kind: str  # none | canny | depth | boxes
    canny_image: str | None
    canny_low: int
    canny_high: int
    canny_blur: int
    depth_image: str | None
    depth_map: str | None
    boxes: list[list]  # rows: x0, y0, x1, y1 (0..1), label, reference name
    background: str | None = None  # with boxes that place subjects: keep this picture outside them
    boxes3d: list[list] | None = None  # rows: cx, cy, cz, w, h, d (camera metres), yaw (degrees), label, reference
    masks: list[list] | None = None  # rows: mask file, label, reference


def size_of(preset: str, width: int, height: int, max_size: int) -> tuple[int, int] | None:
    """(height, width) from the settings; 'auto' lets the pipeline use the last reference's size. A preset is
    scaled to the model's largest size; a custom size is taken as it is, and checked like the CLI's ``--size``."""
    if preset == AUTO_SIZE:
        return None
    if preset in SIZE_PRESETS:
        w, h = SIZE_PRESETS[preset]
        scale = min(1.0, max_size / max(w, h))
        return int(h * scale) // 16 * 16, int(w * scale) // 16 * 16
    w, h = whole(width, "width"), whole(height, "height")
    if w < 1 or h < 1:
        raise InputError(f"size {w}x{h}: the width and height must be at least 1 pixel")
    return h, w


def whole(value, name: str) -> int:
    """A setting that must be a whole number (a fraction is refused, never truncated)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InputError(f"{name} must be a whole number (got {value!r})")
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{name} must be a whole number (got {str(value)[:40]!r})") from None
    if not number.is_integer():
        raise InputError(f"{name} must be a whole number (got {str(value)[:40]})")
    return int(number)


def _box3d_text(row: list) -> str:
    """A 3-D box row as the CLI's ``cx,cy,cz,w,h,d,yaw`` (metres, degrees)."""
    return ",".join(repr(float(v)) for v in row[:7])


def _box_text(row: list) -> str:
    """A table row as the box spec the CLI takes: ``x0,y0,x1,y1[:label]`` in 0..1 fractions."""
    coords = ",".join(repr(float(v)) for v in row[:4])
    return f"{coords}:{row[4]}" if row[4] else coords


SLOT_NAME = re.compile(r"img[1-9][0-9]{0,2}")  # what a placed subject's reference may be on the page


def controls_of(layout: LayoutInputs) -> ControlSpec:
    """The layout tab as a ControlSpec: the same structure controls the CLI's options give."""
    if layout.kind == "canny" and layout.canny_image:
        return ControlSpec(
            canny=layout.canny_image,
            canny_low=int(layout.canny_low),
            canny_high=int(layout.canny_high),
            canny_blur=int(layout.canny_blur),
        )
    if layout.kind == "depth" and (layout.depth_map or layout.depth_image):
        return ControlSpec(depth_map=layout.depth_map) if layout.depth_map else ControlSpec(depth=layout.depth_image)
    on = layout.kind == "boxes"
    rows = box_rows(layout.boxes) if on else []
    solid, masks = (box3d_rows(layout.boxes3d), mask_rows(layout.masks)) if on else ([], [])
    if any(row[5] for row in rows) or solid or masks:  # placed references: SIGMA-GEN subjects
        placed = [("Box", _box_text(r), r[5]) for r in rows] + [("3-D box", _box3d_text(r), r[8]) for r in solid]
        placed += [("Mask", r[1] or Path(r[0]).name, r[2]) for r in masks]
        for what, row, ref in placed:
            if not ref:
                raise InputError(f"{what} {row} has no reference: once subjects are placed, give each its reference")
            if not SLOT_NAME.fullmatch(str(ref)):  # never a path: the server would read any file it names
                raise InputError(
                    f"{what} {row}: its reference {str(ref)[:40]!r} is not a slot name; pick img1, img2, ..."
                )
        subjects = [f"{r[5]}@box={_box_text(r)}" for r in rows] + [f"{r[8]}@box3d={_box3d_text(r)}" for r in solid]
        subjects += [f"{r[2]}@mask={r[0]}" for r in masks]
        return ControlSpec(subjects=tuple(subjects), background=layout.background or None)
    return ControlSpec(boxes=tuple(_box_text(row) for row in rows))


def references(state: UIState) -> dict[str, str]:
    """The filled slots by name (img1, img3, ...)."""
    return {name: s.image for name, s in zip(state.names(), state.slots, strict=True) if s.filled}


def request_of(state: UIState, layout: LayoutInputs | None, config: GenerationConfig, arch, *, preview=False):
    """THE request of the page's current values (the same builder as the CLI's)."""
    controls = controls_of(layout) if layout is not None else None
    return build_request(
        state.prompt, references(state), arch=arch, config=config, controls=controls, estimate_depth=not preview
    )


def routing_preview(layout: LayoutInputs, state: UIState, size, arch) -> Image.Image | None:
    try:
        request = request_of(state, layout, GenerationConfig(size=size), arch, preview=True)
    except SigmaError:
        return None
    controls = [img for img in request.images if img.role != "reference"]
    spatial = next((img.image for img in controls if img.role == "spatial"), None)
    if spatial is not None:  # the ascending routing map, each subject in its box's colour
        return colour_routing(np.asarray(spatial)[..., 0], arch.routing_step)
    return controls[-1].image if controls else None


# an attribute token as it appears (HTML-escaped) in a text part of the preview
TOKENS = re.compile("|".join(re.escape(html.escape(t)) for t in ATTRIBUTE_TOKENS))


def not_ready(message: str) -> str:
    """The preview of a request that cannot be built yet: why, as a note. Errors are red in one place only, the box
    under Generate, which shows the same message (from the same request builder) when Generate is pressed."""
    return (f'<div class="sigma-preview not-ready" role="note">ℹ Not ready to generate: '
            f"{html.escape(browser_text(message))}</div>")  # fmt: skip


def preview_html(state: UIState, layout: LayoutInputs | None = None, arch=None, size=None) -> str:
    """The sequence the model will receive (the request's parts, controls included) as HTML: text spans and
    thumbnails in order, each image with its tokens. ``size`` (height, width): the settings' output size."""
    import base64
    import html
    import io

    from sigma_studio.model.presets import tiny
    from sigma_studio.model.request.prompt import TextPart

    if not state.prompt.strip() and not references(state):
        return '<div class="sigma-preview hint">Write a prompt and add references: the sequence appears here.</div>'
    if why := depth.blocked(layout):  # never a depth part that cannot be made
        return not_ready(why)
    try:
        request = request_of(state, layout, GenerationConfig(size=size), arch or tiny(), preview=True)
    except SigmaError as exc:
        return not_ready(str(exc))
    parts = []
    for part in request.parts:
        if isinstance(part, TextPart):  # the attribute tokens marked where they are (the image chips repeat none)
            text = TOKENS.sub(lambda m: f'<mark class="tok">{m.group(0)}</mark>', html.escape(part.text))
            parts.append(f'<span class="seg-text">{text}</span>')
            continue
        img = request.images[part.index]
        thumb = img.image.copy()
        thumb.thumbnail((72, 72))
        buf = io.BytesIO()
        thumb.save(buf, format="PNG")
        data = base64.b64encode(buf.getvalue()).decode()
        tokens = "" if part.attributes else " <i>no token</i>"  # its tokens are marked in the text before it
        parts.append(
            f'<span class="seg-image" data-name="{img.name}" data-role="{img.role}" '
            f'data-tokens="{html.escape(" ".join(part.attributes))}">'
            f'<img src="data:image/png;base64,{data}" alt="{img.name}"/><b>{img.name}</b>{tokens}</span>'
        )
    notes = "".join(f"<div>ℹ {html.escape(browser_text(w))}</div>" for w in request.warnings)  # notes, not errors
    notes = f'<div class="sigma-note sigma-preview-notes" role="note">{notes}</div>' if notes else ""
    return '<div class="sigma-preview">' + " ".join(parts) + "</div>" + notes


@dataclass(frozen=True)
class WebResult:
    paths: list[str]  # one PNG (with its record) per image, in seed order
    records: list[dict]
    seeds: list[int]
    info: str  # markdown for the page


def settings_config(settings: dict, max_size: int) -> GenerationConfig:
    """The page's settings as a GenerationConfig (seed -1 or empty: drawn by the pipeline, and reported). The rules
    are the CLI's: a custom size is used as it is, and a seed is -1 or a whole number from 0."""
    seed = settings.get("seed")
    seed = None if seed is None or seed == "" else whole(seed, "seed")
    if seed is not None and seed < RANDOM_SEED:
        raise InputError(f"seed {seed} is not a seed: use {RANDOM_SEED} for a new random seed, or a whole number "
                         "from 0")  # fmt: skip
    return GenerationConfig(
        steps=whole(settings["steps"], "steps"),
        cfg_text_scale=float(settings["cfg_text"]),
        cfg_img_scale=float(settings["cfg_img"]),
        cfg_interval=(float(settings["cfg_low"]), float(settings["cfg_high"])),
        cfg_renorm_type=settings["renorm"],
        timestep_shift=float(settings["shift"]),
        size=size_of(settings["preset"], settings["width"], settings["height"], max_size),
        seed=None if seed is None or seed == RANDOM_SEED else seed,
        group_mask=bool(settings["group_mask"]),
        guidance_every=speed_every(settings.get("speed") or DEFAULT_SPEED),
        think=None if settings.get("think") is None else bool(settings["think"]),
    )


def generate(pipe, state: UIState, layout: LayoutInputs, settings: dict, outputs: Path, progress=None, *,
             jobs: Jobs | None = None, token: str | None = None) -> WebResult:  # fmt: skip
    """Run the page's request: ``settings["count"]`` images (default 1), one per seed."""
    if why := depth.blocked(layout):
        raise InputError(why)
    request = request_of(state, layout, settings_config(settings, pipe.arch.max_image_size), pipe.arch)
    count = int(settings.get("count") or COUNT)
    paths, records, seeds, last = run_request(
        pipe, request, outputs, count=count, jobs=jobs, token=token, progress=progress
    )
    seed_text = ", ".join(str(s) for s in seeds)
    info = f"**seed** {seed_text} · **{last.seconds:.1f} s** each · {last.size[1]}×{last.size[0]} · {pipe.mode}"
    if last.plan is not None:  # think mode: what the model planned (the last image's, cut; each record has it whole)
        from sigma_studio.model.run.think import shown_plan

        info += f"\n\n**plan** {html.escape(shown_plan(last.plan)) or '(empty)'}"
    if last.warnings:
        info += "\n\n" + "\n".join(f"⚠ {html.escape(w)}" for w in last.warnings)
    return WebResult(paths, records, seeds, info)


def message_of(exc: BaseException) -> str:
    """A one-line message for the page (never a stack trace), in browser words."""
    if isinstance(exc, SigmaError):
        return browser_text(str(exc))
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return "Out of GPU memory: choose a smaller size, fewer references, or start the server with --mode nf4"
    # the log line names the failure itself (the CLI's log handler prints one line, without the traceback)
    log.error("generation failed: %s: %s", type(exc).__name__, str(exc)[:500], exc_info=exc)
    return f"Generation failed ({type(exc).__name__}); the server log has the details"


def friendly(exc: BaseException) -> gr.Error:
    """The message as a Gradio error (for the API; the page shows messages in its error box)."""
    return gr.Error(message_of(exc), print_exception=False)


def send_to_references(state: UIState, path: str | None) -> UIState:
    from .state import add_slot, set_image

    if not path:  # (the message goes in the page's error box, as every other refusal of the page)
        return replace(state, error="Generate an image first: then it can be sent to the references")
    empty = next((k for k, s in enumerate(state.slots) if not s.filled), None)
    if empty is None:
        state = add_slot(state)
        if state.error:
            return state
        empty = len(state.slots) - 1
    return replace(set_image(state, empty, path), error="")


def depth_preview(image: str | None, depth_map: str | None) -> Image.Image | None:
    try:
        if depth_map:
            return to_rgb(open_image(depth_map))
        if image and (why := depth.estimator_missing()):
            raise InputError(why)
        if image:
            return estimate_depth(to_rgb(open_image(image)))
    except SigmaError as exc:
        raise friendly(exc) from None
    return None
