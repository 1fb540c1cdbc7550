"""Widget values -> state / configs -> pipeline calls; SigmaError -> gr.Error. No layout here."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image

from sigma_studio.model import ControlSpec, GenerationConfig, SigmaError, build_request
from sigma_studio.model.control import estimate_depth
from sigma_studio.model.errors import InputError
from sigma_studio.model.images import open_image, to_rgb

from .state import UIState

log = logging.getLogger(__name__)
SIZE_PRESETS = {
    "1:1": (1024, 1024),
    "4:3": (1024, 768),
    "3:4": (768, 1024),
    "16:9": (1024, 576),
    "9:16": (576, 1024),
}
MAX_UPLOAD_MB = 20
LAYOUT_KINDS = ("none", "canny", "depth", "boxes")  # the layout tab's choices


def upload_problem(path: str) -> str | None:
    """Why an uploaded reference cannot be used (None when it is a decodable image of a sane size)."""
    if Path(path).stat().st_size > MAX_UPLOAD_MB * 2**20:
        return f"Upload refused: {Path(path).name} is over {MAX_UPLOAD_MB} MB; upload a smaller image"
    try:
        open_image(path)
    except InputError as exc:  # the message names the server-side path: keep only what the user needs
        why = "is too large to decode safely" if "too large" in str(exc) else "is not a readable image"
        return f"Upload refused: {Path(path).name} {why}; use a PNG, JPEG or WebP picture"
    return None


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


def box_rows(value) -> list[list]:
    """The boxes table as plain rows [x0, y0, x1, y1, label, reference] (a DataFrame, an array or None)."""
    if value is None:
        return []
    rows = value.values.tolist() if hasattr(value, "values") else list(value)
    out = []
    for row in rows:
        row = list(row) + [""] * (6 - len(row))
        if any(v is None or v == "" or (isinstance(v, float) and v != v) for v in row[:4]):
            continue  # an incomplete row being edited
        label, ref = ("" if v is None or (isinstance(v, float) and v != v) else str(v) for v in row[4:6])
        out.append([float(v) for v in row[:4]] + [label, ref])
    return out


def remap_box_refs(rows, mapping: dict[int, int | None]) -> list[list]:
    """Follow slot renumbering (remove / move) in the boxes' reference column; None drops the reference."""
    out = []
    for row in box_rows(rows):
        ref = row[5]
        if ref.startswith("img") and ref[3:].isdigit() and int(ref[3:]) in mapping:
            new = mapping[int(ref[3:])]
            row[5] = f"img{new}" if new else ""
        out.append(row)
    return out


def size_of(preset: str, width: int, height: int, max_size: int) -> tuple[int, int] | None:
    """(height, width) from the settings; 'auto' lets the pipeline use the last reference's size."""
    if preset == "auto":
        return None
    w, h = SIZE_PRESETS.get(preset, (int(width), int(height)))
    scale = min(1.0, max_size / max(w, h))
    return int(h * scale) // 16 * 16, int(w * scale) // 16 * 16


def _box_text(row: list) -> str:
    """A table row as the box spec the CLI takes: ``x0,y0,x1,y1[:label]`` in 0..1 fractions."""
    coords = ",".join(repr(float(v)) for v in row[:4])
    return f"{coords}:{row[4]}" if row[4] else coords


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
    rows = box_rows(layout.boxes) if layout.kind == "boxes" else []
    refs = [row[5] for row in rows]
    if any(refs):  # boxes assigned to references place those references as SIGMA-GEN subjects
        unassigned = [_box_text(row) for row, ref in zip(rows, refs, strict=True) if not ref]
        if unassigned:
            raise InputError(f"Box {unassigned[0]} has no reference: once boxes place references, give every box one")
        return ControlSpec(subjects=tuple(f"{ref}@box={_box_text(row)}" for row, ref in zip(rows, refs, strict=True)))
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
    if spatial is not None:  # the ascending routing map, brightened
        asc = np.asarray(spatial)[..., 0].astype(np.float32)
        return Image.fromarray((asc * 2.5).clip(0, 255).astype(np.uint8))
    return controls[-1].image if controls else None


def preview_html(state: UIState, layout: LayoutInputs | None = None, arch=None) -> str:
    """The sequence the model will receive (the request's parts, controls included) as HTML: text spans and
    thumbnails in order, each image with its tokens."""
    import base64
    import html
    import io

    from sigma_studio.model.config import tiny
    from sigma_studio.model.prompt import TextPart

    try:
        request = request_of(state, layout, GenerationConfig(), arch or tiny(), preview=True)
    except SigmaError as exc:
        return f'<div class="sigma-preview error">{html.escape(str(exc))}</div>'
    parts = []
    for part in request.parts:
        if isinstance(part, TextPart):
            parts.append(f'<span class="seg-text">{html.escape(part.text)}</span>')
            continue
        img = request.images[part.index]
        thumb = img.image.copy()
        thumb.thumbnail((72, 72))
        buf = io.BytesIO()
        thumb.save(buf, format="PNG")
        data = base64.b64encode(buf.getvalue()).decode()
        tokens = " ".join(html.escape(t) for t in part.attributes) or "no token"
        parts.append(
            f'<span class="seg-image" data-name="{img.name}" data-role="{img.role}" '
            f'data-tokens="{html.escape(" ".join(part.attributes))}">'
            f'<img src="data:image/png;base64,{data}" alt="{img.name}"/><b>{img.name}</b> <i>{tokens}</i></span>'
        )
    return '<div class="sigma-preview">' + " ".join(parts) + "</div>"


class Cancelled(Exception):
    """The user pressed Cancel while this generation was running."""


def generate(pipe, state: UIState, layout: LayoutInputs, settings: dict, outputs: Path, progress=None, cancel=None):
    """Run one generation; returns (saved PNG path, info markdown, seed). ``cancel``: an Event that stops it."""
    seed = settings["seed"]
    if settings["randomize"] or seed is None or seed < 0:
        seed = None  # the pipeline draws it, and the result and its record say which
    config = GenerationConfig(
        steps=int(settings["steps"]),
        cfg_text_scale=float(settings["cfg_text"]),
        cfg_img_scale=float(settings["cfg_img"]),
        cfg_interval=(float(settings["cfg_low"]), float(settings["cfg_high"])),
        cfg_renorm_type=settings["renorm"],
        timestep_shift=float(settings["shift"]),
        size=size_of(settings["preset"], settings["width"], settings["height"], pipe.arch.max_image_size),
        seed=None if seed is None else int(seed),
        group_mask=bool(settings["group_mask"]),
    )
    request = request_of(state, layout, config, pipe.arch)

    def callback(i: int, n: int) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled
        if progress is not None:
            progress((i, n), desc="Denoising")

    result = pipe(request, progress=callback)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = result.save(outputs / f"sigma-{stamp}-{result.seed}-{uuid.uuid4().hex[:8]}.png")  # never overwrites
    info = f"**seed** {result.seed} · **{result.seconds:.1f} s** · {result.size[1]}×{result.size[0]} · {pipe.mode}"
    if result.warnings:
        info += "\n\n" + "\n".join(f"⚠ {w}" for w in result.warnings)
    return str(path), info, result.seed


def friendly(exc: BaseException) -> gr.Error:
    """A message for the page (never a stack trace)."""
    if isinstance(exc, SigmaError):
        return gr.Error(str(exc))
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return gr.Error(
            "Out of GPU memory: choose a smaller size, fewer references, or a lighter --mode (nf4, offload)"
        )
    log.exception("generation failed")
    return gr.Error(f"Generation failed ({type(exc).__name__}); the server log has the details")


def send_to_references(state: UIState, path: str | None) -> UIState:
    from .state import add_slot, set_image

    if not path:
        raise gr.Error("Generate an image first")
    empty = next((k for k, s in enumerate(state.slots) if not s.filled), None)
    if empty is None:
        state = add_slot(state)
        if state.error:
            raise gr.Error(state.error)
        empty = len(state.slots) - 1
    return replace(set_image(state, empty, path), error="")


def depth_preview(image: str | None, depth_map: str | None) -> Image.Image | None:
    try:
        if depth_map:
            return to_rgb(open_image(depth_map))
        if image:
            return estimate_depth(to_rgb(open_image(image)))
    except SigmaError as exc:
        raise gr.Error(str(exc)) from None
    return None
