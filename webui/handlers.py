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

from sigma_studio.model import GenerationConfig, SigmaError
from sigma_studio.model.control import Box, canny_edges, estimate_depth, render_boxes, with_layout_reference
from sigma_studio.model.errors import InputError
from sigma_studio.model.images import open_image, save_png, to_rgb
from sigma_studio.model.multisubject import Subject, build_request, regions, routing_maps

from .state import UIState, preview, strip_images

log = logging.getLogger(__name__)
SIZE_PRESETS = {
    "1:1": (1024, 1024),
    "4:3": (1024, 768),
    "3:4": (768, 1024),
    "16:9": (1024, 576),
    "9:16": (576, 1024),
}
MAX_UPLOAD_MB = 20


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


def layout_images(layout: LayoutInputs, state: UIState, size: tuple[int, int] | None, max_size: int):
    """(extra control images by name, subject request or None) for the chosen layout input."""
    h, w = size or (max_size, max_size)
    next_name = f"img{len(state.slots) + 1}"
    if layout.kind == "canny" and layout.canny_image:
        src = to_rgb(open_image(layout.canny_image)).resize((w, h), Image.BICUBIC)
        return {next_name: canny_edges(src, layout.canny_low, layout.canny_high, layout.canny_blur)}, None
    if layout.kind == "depth" and (layout.depth_map or layout.depth_image):
        if layout.depth_map:
            depth = to_rgb(open_image(layout.depth_map))
        else:
            depth = estimate_depth(to_rgb(open_image(layout.depth_image)))
        return {next_name: depth.resize((w, h), Image.BICUBIC)}, None
    if layout.kind == "boxes" and layout.boxes:
        boxes = [
            Box(float(r[0]) * w, float(r[1]) * h, float(r[2]) * w, float(r[3]) * h, str(r[4] or ""))
            for r in layout.boxes
        ]
        refs = [str(r[5] or "") for r in layout.boxes]
        if any(refs):
            return {}, _subjects(state, boxes, refs, (h, w))
        return {next_name: render_boxes(boxes, (w, h))}, None
    return {}, None


def _subjects(state: UIState, boxes: list[Box], refs: list[str], size: tuple[int, int]) -> list[Subject]:
    images = {name: s.image for name, s in zip(state.names(), state.slots, strict=True) if s.filled}
    unplaced = sorted(set(images) - set(refs))
    if unplaced:
        raise InputError(
            f"{', '.join(unplaced)} has no box: with boxes assigned to references, every reference is a subject "
            "(give it a box, or remove it)"
        )
    subjects = []
    for box, ref in zip(boxes, refs, strict=True):
        if ref not in images:
            raise InputError(
                f"Box '{box.label or box.as_text()}' is assigned to {ref or 'no reference'}; pick a filled slot"
            )
        subjects.append(Subject(to_rgb(open_image(images[ref])), box=box, id=ref))
    return subjects


def routing_preview(layout: LayoutInputs, state: UIState, size, max_size: int) -> Image.Image | None:
    try:
        extra, subjects = layout_images(layout, state, size, max_size)
    except SigmaError:
        return None
    if subjects:
        h, w = size or (max_size, max_size)
        asc, _ = routing_maps(regions(subjects, (h, w)))
        return Image.fromarray((asc.astype(np.float32) * 2.5).clip(0, 255).astype(np.uint8))
    return next(iter(extra.values()), None)


def preview_html(state: UIState, extra: dict[str, str] | None = None) -> str:
    """The interleaved sequence as HTML: text spans and thumbnails in order, each image with its tokens."""
    import base64
    import html
    import io

    try:
        items = preview(state, extra)
    except SigmaError as exc:
        return f'<div class="sigma-preview error">{html.escape(str(exc))}</div>'
    parts = []
    for item in items:
        if item.kind == "text":
            parts.append(f'<span class="seg-text">{html.escape(item.text)}</span>')
            continue
        thumb = to_rgb(open_image(item.image)) if isinstance(item.image, str) else item.image
        thumb = thumb.copy()
        thumb.thumbnail((72, 72))
        buf = io.BytesIO()
        thumb.save(buf, format="PNG")
        data = base64.b64encode(buf.getvalue()).decode()
        tokens = " ".join(html.escape(t) for t in item.tokens) or "no token"
        parts.append(
            f'<span class="seg-image" data-name="{item.name}" data-tokens="{html.escape(" ".join(item.tokens))}">'
            f'<img src="data:image/png;base64,{data}" alt="{item.name}"/><b>{item.name}</b> <i>{tokens}</i></span>'
        )
    return '<div class="sigma-preview">' + " ".join(parts) + "</div>"


class Cancelled(Exception):
    """The user pressed Cancel while this generation was running."""


def generate(pipe, state: UIState, layout: LayoutInputs, settings: dict, outputs: Path, progress=None, cancel=None):
    """Run one generation; returns (saved PNG path, info markdown, seed). ``cancel``: an Event that stops it."""
    seed = settings["seed"]
    if settings["randomize"] or seed is None or seed < 0:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    size = size_of(settings["preset"], settings["width"], settings["height"], pipe.arch.max_image_size)
    config = GenerationConfig(
        steps=int(settings["steps"]),
        cfg_text_scale=float(settings["cfg_text"]),
        cfg_img_scale=float(settings["cfg_img"]),
        cfg_interval=(float(settings["cfg_low"]), float(settings["cfg_high"])),
        cfg_renorm_type=settings["renorm"],
        timestep_shift=float(settings["shift"]),
        size=size,
        seed=int(seed),
        group_mask=bool(settings["group_mask"]),
    )
    extra, subjects = layout_images(layout, state, size, pipe.arch.max_image_size)
    images = {name: s.image for name, s in zip(state.names(), state.slots, strict=True) if s.filled}
    prompt, insertion = state.prompt, None
    if subjects:
        hw = size or (pipe.arch.max_image_size, pipe.arch.max_image_size)
        # the subjects reach the model through the identity sheet: their own placeholders leave the prompt
        text = strip_images(prompt, [int(n[3:]) for n in state.names()]) or "a scene"
        req = build_request(subjects, text, hw)
        prompt, images, config = req.prompt, {"img1": req.images[0], "img2": req.images[1]}, config.replace(size=hw)
    for name, control in extra.items():
        images[name] = control
        prompt = with_layout_reference(prompt, name)

    def callback(i: int, n: int) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled
        if progress is not None:
            progress((i, n), desc="Denoising")

    result = pipe(prompt, images, config=config, progress=callback, insertion=insertion)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = outputs / f"sigma-{stamp}-{result.seed}-{uuid.uuid4().hex[:8]}.png"  # never overwrites
    meta = {"sigma:prompt": prompt, "sigma:seed": str(result.seed), "sigma:config": repr(result.config)}
    save_png(result.image, path, meta)
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
