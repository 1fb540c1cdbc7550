"""Turning command-line values into model objects, and results into reproducible PNG metadata."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import typer

from sigma_studio.model import GenerationConfig, InputError
from sigma_studio.model.prompt import PLACEHOLDER_RE, image_number

PARAMS_KEY = "sigma:params"
FORMAT_VERSION = 1


def parse_size(value: str | None) -> tuple[int, int] | None:
    """``1024x768`` (width x height) or ``1024`` (square) -> (height, width)."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX×*]\s*(\d+))?\s*", value)
    if not m:
        raise typer.BadParameter(f"'{value}' is not a size: write WIDTHxHEIGHT, e.g. 1024x768", param_hint="--size")
    w = int(m.group(1))
    h = int(m.group(2) or w)
    return h, w


def parse_interval(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        lo, hi = (float(x) for x in value.split(","))
    except ValueError:
        raise typer.BadParameter(f"'{value}' is not LOW,HIGH (e.g. 0.4,1.0)", param_hint="--cfg-interval") from None
    return lo, hi


def assign_images(prompt: str, named: list[str], positional: list[str]) -> dict[str, str]:
    """Map ``--image img1=FILE`` values and positional files (in prompt order) to placeholder names."""
    images: dict[int, str] = {}
    for item in named:
        if "=" not in item:
            raise typer.BadParameter(f"'{item}' should be NAME=FILE, e.g. img1=man.jpg", param_hint="--image")
        name, path = item.split("=", 1)
        try:
            n = image_number(name)
        except InputError as exc:
            raise typer.BadParameter(str(exc), param_hint="--image") from None
        if n in images:
            raise typer.BadParameter(f"img{n} is given twice", param_hint="--image")
        images[n] = path
    order = [int(m.group(1)) for m in PLACEHOLDER_RE.finditer(prompt)]
    free = [n for n in dict.fromkeys(order) if n not in images]
    for path in positional:
        n = free.pop(0) if free else max([0, *images, *order]) + 1
        images[n] = path
    return {f"img{n}": images[n] for n in sorted(images)}


def generation_config(base: GenerationConfig | None, **options) -> GenerationConfig:
    """A config from the given options only: unset options keep ``base``'s (or the dataclass's) values."""
    values = {k: v for k, v in options.items() if v is not None}
    return (base or GenerationConfig()).replace(**values) if values else (base or GenerationConfig())


def png_metadata(
    prompt: str, images: dict[str, str], config: GenerationConfig, model: str, seed: int | None, controls=None
) -> dict:
    params = {
        "format": FORMAT_VERSION,
        "prompt": prompt,
        "images": {k: str(Path(v).resolve()) for k, v in images.items()},
        "model": model,
        "config": dataclasses.asdict(config.replace(seed=seed)),
        "controls": _absolute(dataclasses.asdict(controls)) if controls is not None else None,
    }
    readable = (
        f"{prompt}\nSteps: {config.steps}, CFG text: {config.cfg_text_scale}, CFG image: {config.cfg_img_scale}, "
    )
    readable += f"Seed: {seed}, Model: {model}"
    return {PARAMS_KEY: json.dumps(params), "parameters": readable}


def _absolute(controls: dict) -> dict:
    """Control options with every file path made absolute, so --from works from another directory."""

    def fix(value: str | None) -> str | None:
        return str(Path(value).resolve()) if value and Path(value).exists() else value

    def fix_spec(spec: str) -> str:  # FILE@placement, where the placement may name a mask / depth file
        path, sep, placement = spec.partition("@")
        if placement.startswith("mask="):
            mask, dsep, depth = placement[5:].partition(",depth=")
            placement = "mask=" + fix(mask) + (dsep + fix(depth) if dsep else "")
        return fix(path) + sep + placement

    out = dict(controls)
    for key in ("canny", "depth", "depth_map", "background"):
        out[key] = fix(out.get(key))
    out["masks"] = [fix(m) for m in out.get("masks", [])]
    out["subjects"] = [fix_spec(s) for s in out.get("subjects", [])]
    out.pop("cache_dir", None)
    return out


def read_params(path: str) -> dict:
    """The generation parameters stored in a PNG written by ``sigma generate``."""
    from sigma_studio.model.images import open_image

    if not Path(path).is_file():
        raise InputError(f"--from {path}: file not found")
    text = open_image(path).info
    if PARAMS_KEY not in text:
        raise InputError(f"--from {path}: this PNG has no SIGMA parameters (was it written by `sigma generate`?)")
    try:
        params = json.loads(text[PARAMS_KEY])
        params["config"] = GenerationConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in params["config"].items()}
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"--from {path}: the stored parameters are unreadable ({exc})") from None
    for name, image in params["images"].items():
        if not Path(image).is_file():
            raise InputError(f"--from {path}: reference {name} ({image}) no longer exists; pass it with --image")
    return params
