"""The checks of the web API's input values (:mod:`webui.api`): uploads, tokens, sizes and the layout tab's values,
SIGMA-GEN's 3-D boxes, masks and background included. Each refusal is an ``InputError`` with one line that names the
value and the form it must take."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from gradio.data_classes import FileData
from gradio.utils import get_upload_folder, is_in_or_equal
from PIL import Image

from sigma_studio.model.errors import InputError
from sigma_studio.model.images import open_image
from sigma_studio.model.request.multisubject import MAX_SUBJECTS, Box3D
from sigma_studio.model.request.structure import IMAGE_NAME, MAX_BOXES, ControlSpec, subject_size
from sigma_studio.model.request.tokens import ATTRIBUTE_TOKENS, suggest_token

from . import handlers as h
from .api_params import AUTO_SIZE
from .guard import store_mask, stored_mask
from .limits import WebLimits

SIZE_RE = re.compile(r"^\s*(\d{1,6})\s*[x×]\s*(\d{1,6})\s*$")
BOX3D_FORM = "[cx, cy, cz, w, h, d, yaw, label, reference] (camera metres: x right, y down, z ahead; yaw in degrees)"
MASK_FORM = "[mask, label, reference] (mask: an uploaded picture, the subject's area white on black)"
SUBJECT_INPUTS = ("boxes", "boxes3d", "masks", "background")  # the layout tab's 'boxes' values
MOST_ROWS = {"boxes": MAX_BOXES, "boxes3d": MAX_SUBJECTS, "masks": MAX_SUBJECTS}  # rows of each placement table


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


def checked_file(path: str | None, what: str, limits: WebLimits, copies: Path | None = None) -> str | None:
    """The path of an upload to use, as the page takes uploads: a very large picture is downscaled into a copy in
    ``copies`` (the call's own folder, removed as it ends; default: beside the upload); an unreadable or oversized
    file is refused with the page's message."""
    if path is None:
        return None
    usable, message = h.prepare_upload(path, copies or Path(path).parent, limits)
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
                close = suggest_token(str(token))
                hint = f" Did you mean {close}?" if close else ""
                raise InputError(
                    f"Unknown token {token} for img{k}.{hint} Attribute tokens are: {' '.join(ATTRIBUTE_TOKENS)}"
                )
        out.append(None if chosen is None else list(chosen))
    return out


def label_and_reference(rest, what: str) -> list[str]:
    """A placement row's last columns: its label, and the reference it places (``img1``, ... or empty). A reference
    is only ever a name of a given image, never a file of the server."""
    label, ref = (str(v or "") for v in [*rest, "", ""][:2])
    if ref and not IMAGE_NAME.fullmatch(ref):
        raise InputError(f"{what}: the reference must be the name of a given image, such as img1 (got {ref[:40]!r})")
    return [label, ref]


def box_row(row, k: int) -> list:
    """One box as the page's table row ``[x0, y0, x1, y1, label, reference]``; the label and reference may be left
    out."""
    usage = f"box {k} must be [x0, y0, x1, y1, label, reference] with x0..y1 from 0 to 1"
    if not isinstance(row, list | tuple) or not 4 <= len(row) <= 6:
        raise InputError(f"{usage} (got {row!r:.80})")
    try:
        coords = [float(v) for v in row[:4]]
    except (TypeError, ValueError):
        raise InputError(f"{usage} (got {row!r:.80})") from None
    if not all(0.0 <= v <= 1.0 for v in coords):
        raise InputError(f"{usage} (got {row!r:.80})")
    return [*coords, *label_and_reference(row[4:], f"box {k}")]


def box3d_row(row, k: int) -> list:
    """One 3-D box as the page's table row ``[cx, cy, cz, w, h, d, yaw°, label, reference]`` (the CLI's
    ``@box3d=cx,cy,cz,w,h,d,yaw``), checked as the model checks a 3-D box; the label may be left out."""
    usage = f"3-D box {k} must be {BOX3D_FORM}"
    if not isinstance(row, list | tuple) or not 7 <= len(row) <= 9:
        raise InputError(f"{usage} (got {row!r:.80})")
    try:
        numbers = [float(v) for v in row[:7]]
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{usage} (got {row!r:.80})") from None
    Box3D(tuple(numbers[:3]), tuple(numbers[3:6]), math.radians(numbers[6])).check(f"3-D box {k}")
    return [*numbers, *label_and_reference(row[7:], f"3-D box {k}")]


def mask_row(row, k: int) -> list:
    """One mask as the page's table row ``[mask, label, reference]``; ``mask`` is whatever the door received (a
    Gradio upload, base64 text, a form's file part), to be stored as an upload before it is read."""
    if not isinstance(row, list | tuple) or not 1 <= len(row) <= 3 or row[0] in (None, ""):
        raise InputError(f"mask {k} must be a row {MASK_FORM} (got {row!r:.80})")
    return [row[0], *label_and_reference(row[1:], f"mask {k}")]


def rows_of(value, name: str, row_of) -> list[list]:
    """A placement table (boxes, boxes3d, masks) as checked rows; None is no rows. Its length is checked before any
    row is: a mask table is read (its files decoded) and every box drawn, so it is held to what one request may
    place (:data:`MOST_ROWS`)."""
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise InputError(f"{name} must be a list of rows (got {value!r:.80})")
    if len(value) > MOST_ROWS[name]:
        what = "boxes" if name == "boxes" else "subjects"
        raise InputError(f"{name} has {len(value)} rows; a request takes at most {MOST_ROWS[name]} {what}")
    return [row_of(row, k) for k, row in enumerate(value, start=1)]


def layout_of(kind: str, image: str | None, boxes, canny: tuple[int, int, int], *, boxes3d=None, masks=None,
              background: str | None = None) -> h.LayoutInputs:  # fmt: skip
    """The layout tab's values: ``image`` is the Canny source, or the ready depth map. With layout 'boxes', 2-D
    boxes with a reference, ``boxes3d`` and ``masks`` place references as SIGMA-GEN subjects (the mask files are
    read later, by :func:`stored_masks`), optionally inserted into ``background``."""
    if kind not in h.LAYOUT_KINDS:
        raise InputError(f"layout '{kind}' is not one of {', '.join(h.LAYOUT_KINDS)}")
    if kind in ("canny", "depth") and not image:
        what = "the picture whose edges lay out the image" if kind == "canny" else "a ready depth map"
        raise InputError(f"layout '{kind}' needs layout_image: {what}")
    given = dict(zip(SUBJECT_INPUTS, (boxes, boxes3d, masks, background), strict=True))
    extra = next((name for name, value in given.items() if value), None)
    if extra and kind != "boxes":
        verb = "is" if extra == "background" else "are"
        raise InputError(f"{extra} {verb} read only with layout 'boxes' (layout is '{kind}')")
    if kind == "boxes" and not (boxes or boxes3d or masks):
        raise InputError("layout 'boxes' needs boxes: rows [x0, y0, x1, y1, label, reference] with x0..y1 in 0..1 "
                         "(or boxes3d or masks, which place references as subjects)")  # fmt: skip
    rows, solid = rows_of(boxes, "boxes", box_row), rows_of(boxes3d, "boxes3d", box3d_row)
    shapes = rows_of(masks, "masks", mask_row)
    if background and not (any(row[5] for row in rows) or solid or shapes):
        raise InputError("background keeps a picture outside the placed subjects: place at least one reference with "
                         "a box's reference column, boxes3d or masks")  # fmt: skip
    canny_image, depth_map = (image, None) if kind == "canny" else (None, image if kind == "depth" else None)
    return h.LayoutInputs(kind, canny_image, *canny, None, depth_map, rows, background, solid, shapes)


def stored_masks(
    layout: h.LayoutInputs, size_hw, arch, folder: Path, limits: WebLimits, copies: Path | None = None
) -> list[list]:
    """The mask rows with each upload checked (limits, decoding), made a mask (its light pixels), refused when it
    holds nothing or has another shape than the output (``size_hw``, or the size ``background`` gives), and saved
    under ``folder`` with a name the server chose (``mask-<hex>.png``, as the page saves its masks)."""
    if not layout.masks:
        return []
    spec = ControlSpec(subjects=("img1",), background=layout.background)  # (only its background is read)
    height, width = subject_size(spec, arch, size_hw)
    made = []
    for k, (path, label, ref) in enumerate(layout.masks, start=1):
        what = f"mask {k} ({h.name_of(path)})"
        usable = checked_file(path, f"mask {k}", limits, copies)
        mask = np.asarray(open_image(usable, max_pixels=limits.max_pixels).convert("L")) > 127
        if not mask.any():
            raise InputError(f"{what} has nothing in it: paint the subject's area white on black")
        mh, mw = mask.shape
        if abs(mw / mh - width / height) > 0.01 * width / height:
            raise InputError(f"{what} is {mw}x{mh}, another shape than the {width}x{height} output: draw it at the "
                             "output's aspect ratio, or choose a size of the mask's shape")  # fmt: skip
        made.append((Image.fromarray(mask.astype(np.uint8) * 255), label, ref))
    folder.mkdir(parents=True, exist_ok=True)
    return [[str(store_mask(m, folder)), label, ref] for m, label, ref in made]


def forget_masks(subjects, folder: Path) -> None:
    """Delete the masks :func:`stored_masks` saved for a request whose caller gets no image from it (a preview, a
    refusal, a cancel): only the files of ``folder`` that the server named itself."""
    for spec in subjects:
        placement = spec.partition("@")[2]
        path = stored_mask(placement.removeprefix("mask="), folder) if placement.startswith("mask=") else None
        if path is not None:
            path.unlink(missing_ok=True)


def size_settings(size: str) -> dict:
    """``auto``, a page preset (``4:3``) or ``WxH`` as the page's preset / width / height settings."""
    size = str(size or AUTO_SIZE).strip()
    if size == AUTO_SIZE or size in h.SIZE_PRESETS:
        return {"preset": size, "width": 0, "height": 0}
    m = SIZE_RE.match(size)
    if not m:
        shown = size if len(size) <= 40 else size[:37] + "…"
        raise InputError(f"size '{shown}' is not auto, WxH (e.g. 768x512) or one of {', '.join(h.SIZE_PRESETS)}")
    return {"preset": "custom", "width": int(m.group(1)), "height": int(m.group(2))}
