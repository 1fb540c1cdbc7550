"""``sigma layout``: the control images a request would carry, built by the request builder and saved one PNG each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from sigma_studio.model.config import ArchConfig, GenerationConfig
from sigma_studio.model.errors import InputError
from sigma_studio.model.files import check_name_length, check_output_file
from sigma_studio.model.images import save_png
from sigma_studio.model.request.build import build_request
from sigma_studio.model.request.prompt import InterleavedPrompt
from sigma_studio.model.request.structure import ControlSpec


def control_images(controls: ControlSpec, arch: ArchConfig, size: tuple[int, int] | None) -> dict[str, Image.Image]:
    """Every image the controls add to a request, by the name the request gives it (canny, depth, boxes, identities,
    spatial), plus the spatial control's three channels and the kept-background mask, to look at one by one."""
    if controls.empty:
        raise InputError("nothing to build: give --canny, --depth, --depth-map, --box or --subject")
    request = build_request(InterleavedPrompt(()), arch=arch, config=GenerationConfig(size=size), controls=controls)
    images = {img.name: img.image for img in request.images if img.role != "reference"}
    if "spatial" in images:
        channels = np.asarray(images["spatial"])
        for k, name in enumerate(("routing_ascending", "routing_descending", "structure")):
            images[name] = Image.fromarray(channels[..., k])
    if request.insertion is not None:
        images["background_kept"] = Image.fromarray(request.insertion.keep.astype(np.uint8) * 255)
    return images


def save_layout(
    controls: ControlSpec, arch: ArchConfig, size: tuple[int, int] | None, out: Path, overwrite: bool
) -> list[Path]:
    check_name_length(out, "--out")  # before any look at it: the OS refuses a name over 255 bytes
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: give a folder for the control images")
    images = control_images(controls, arch, size)
    targets = {name: check_output_file(out / f"{name}.png", overwrite) for name in images}  # all, before writing
    return [save_png(img, targets[name]) for name, img in images.items()]
