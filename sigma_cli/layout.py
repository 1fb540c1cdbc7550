"""``sigma layout``: the control images a request would carry, saved one PNG each."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from sigma_studio.model.config import ArchConfig
from sigma_studio.model.errors import InputError
from sigma_studio.model.files import check_output_file
from sigma_studio.model.images import save_png
from sigma_studio.model.multisubject import identity_dictionary, regions, routing_maps, spatial_control
from sigma_studio.model.structure import ControlSpec, layout_images, parse_subjects, subject_size


def control_images(controls: ControlSpec, arch: ArchConfig, size: tuple[int, int] | None) -> dict[str, Image.Image]:
    """Every control image by name: the layout controls, and for subjects the identity sheet, the spatial control
    and its three channels."""
    images = layout_images(controls, arch, size)
    if controls.subjects:
        hw = subject_size(controls, arch, size)
        subjects = parse_subjects(controls, hw)
        reg = regions(subjects, hw)
        asc, desc = routing_maps(reg)
        images |= {"dictionary": identity_dictionary(subjects), "spatial": spatial_control(reg)}
        images |= {"routing_ascending": Image.fromarray(asc), "routing_descending": Image.fromarray(desc)}
        images["structure"] = Image.fromarray(reg.structure)
    if not images:
        raise InputError("nothing to build: give --canny, --depth, --depth-map, --box or --subject")
    return images


def save_layout(
    controls: ControlSpec, arch: ArchConfig, size: tuple[int, int] | None, out: Path, overwrite: bool
) -> list[Path]:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: give a folder for the control images")
    images = control_images(controls, arch, size)
    targets = {name: check_output_file(out / f"{name}.png", overwrite) for name in images}  # all, before writing
    return [save_png(img, targets[name]) for name, img in images.items()]
