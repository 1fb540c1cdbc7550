"""``sigma generate`` and ``sigma layout``: options -> one GenerationRequest (checked before loading) -> pipeline."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sigma_studio.model import GenerationRecord, LoaderConfig, build_request, load_pipeline, read_record
from sigma_studio.model.config import DEFAULT_MODEL
from sigma_studio.model.errors import InputError
from sigma_studio.model.files import check_output_file, check_png_name
from sigma_studio.model.request.prompt import PLACEHOLDER_RE, check_prompt_size, image_number
from sigma_studio.model.request.structure import ControlSpec
from sigma_studio.model.run.accel import SINGLE_IMAGE_AUTO
from sigma_studio.model.run.parallel import Shared, join_torchrun
from sigma_studio.model.weights.preflight import preflight_arch, same_geometry

from . import render
from .groups import grouped
from .options import (
    ComposeOpt,
    ControlOptions,
    DebugOpt,
    FacesOpt,
    JsonOpt,
    Layout,
    LoadOptions,
    OutFile,
    OverwriteOpt,
    SamplerOptions,
    Seed,
    Size,
    absolute,
    control_spec,
    flag,
    parse_size,
)

EXAMPLES = """
[b]Examples[/]

  sigma generate "Draw the <subject>shape <img1> in the <style>colour of <img2>." a.png b.png --model shapes

  sigma generate "Place <id>the man <img1> next to <subject>the dog <img2>" -i img1=man.jpg -i img2=dog.png --seed 7

  sigma generate "a city street at dusk" --canny photo.jpg --size 1024x768

  sigma generate "a sunny park" --subject cat.png@box=0.1,0.5,0.5,0.9 --subject dog.png@box=0.5,0.4,0.9,0.9

  sigma generate --from result.png --seed 8     [dim]# repeat a result (any front end's PNG), vary one setting[/]
"""


FROM_HELP = "repeat a result from its PNG's record (its model too, unless --model)"


def assign_images(prompt: str, named: list[str], positional: list[str]) -> dict[str, str]:
    """Map ``--image img1=FILE`` values and positional files (in prompt order) to placeholder names."""
    images: dict[int, str] = {}
    for item in named:
        if "=" not in item:
            raise InputError(f"--image '{item}' should be NAME=FILE, e.g. img1=man.jpg")
        name, path = item.split("=", 1)
        n = image_number(name)
        if not path.strip():
            raise InputError(f"--image '{item}' names no file after '=', e.g. {name}=man.jpg")
        if n in images:
            raise InputError(f"--image img{n} is given twice")
        images[n] = path
    order = [int(m.group(1)) for m in PLACEHOLDER_RE.finditer(prompt)]
    free = [n for n in dict.fromkeys(order) if n not in images]
    for path in positional:
        if not os.path.exists(path) and ("<img" in path or (" " in path and not Path(path).suffix)):
            raise InputError(f"{path!r} looks like a prompt, not an image file: the prompt comes first, then the "
                             "images")  # fmt: skip
        if not os.path.exists(path) and not Path(path).suffix:  # a word, not a file: the prompt's, unquoted
            quoted = f'sigma generate "{prompt} {path} ..."'
            raise InputError(f"Image file not found: {path}. If it is a word of the prompt, quote the prompt: "
                             f"{quoted} (the prompt comes first, then the images)")  # fmt: skip
        n = free.pop(0) if free else max([0, *images, *order]) + 1
        images[n] = path
    return {f"img{n}": images[n] for n in sorted(images)}


def _replayed_images(record: GenerationRecord, given: dict[str, str], source: str, new_prompt: str | None):
    """The record's reference files, overridden by the ones given again; a missing one is a clear error. With a new
    prompt, only the recorded references it places are kept."""
    placed = {f"img{m.group(1)}" for m in PLACEHOLDER_RE.finditer(new_prompt)} if new_prompt is not None else None
    images = {}
    for name, file in record.reference_files().items():
        if name in given or (placed is not None and name not in placed):
            continue
        if not file or not os.path.isfile(file):
            where = f" ({file}) no longer exists" if file else " was given as pixels, not a file"
            raise InputError(f"--from {source}: reference {name}{where}; pass it again with --image {name}=FILE")
        images[name] = file
    return images | given


CONTROL_FILES = {"canny": "--canny", "depth": "--depth", "depth_map": "--depth-map", "background": "--background",
                 "scene_depth": "--scene-depth"}  # fmt: skip


def _controls(record: GenerationRecord | None, given: dict, source: str | None) -> ControlSpec:
    """The CLI's control options; with --from, the recorded controls with the given options changed."""
    if given.keys() & {"canny_low", "canny_high", "canny_blur"} and not (
        given.get("canny") or (record and record.controls.get("canny"))
    ):
        raise InputError("--canny-low, --canny-high and --canny-blur tune --canny: give --canny IMAGE too")
    if record is None:
        return control_spec(**given)
    spec = record.control_spec()
    spec = control_spec(**(dataclasses.asdict(spec) | given))
    for key, option in CONTROL_FILES.items():  # a recorded file that moved: say which option brings it back
        path = getattr(spec, key)
        if path and key not in given and not os.path.isfile(path):
            raise InputError(
                f"--from {source}: the recorded {option} file {path} no longer exists; pass {option} again"
            )
    return spec


def _hash_warnings(record: GenerationRecord | None, request) -> list[str]:
    if record is None:
        return []
    stored = record.reference_hashes()
    changed = [
        img.name
        for img in request.images
        if img.role == "reference" and stored.get(img.name) and stored[img.name] != img.sha256
    ]
    if not changed:
        return []
    return [
        f"{', '.join(changed)}: not the picture(s) this result was made from (the pixels differ), so the output will "
        "differ"
    ]


@grouped
def generate(
    prompt: Annotated[
        str | None, typer.Argument(help="interleaved prompt, e.g. 'a man <id> <img1> ...'", metavar="PROMPT")
    ] = None,
    files: Annotated[
        list[str] | None, typer.Argument(help="reference images, in prompt order", metavar="FILES")
    ] = None,
    *,
    image: Annotated[
        list[str] | None, typer.Option("--image", "-i", help="NAME=FILE, e.g. img1=man.jpg", metavar="NAME=FILE")
    ] = None,
    out: OutFile = None,  # a string: a Path would drop the trailing separator of a folder ("dir/")
    size: Size = None,
    seed: Seed = None,
    layout: Layout = None,
    sampler: SamplerOptions,
    controls: ControlOptions,
    compose: ComposeOpt = False,
    faces: FacesOpt = False,
    from_png: Annotated[str | None, typer.Option("--from", help=FROM_HELP)] = None,
    load: LoadOptions,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Generate one image from an interleaved prompt, reference images and optional structure controls.

    Every input is checked before the model loads. The PNG carries the full record of the request.
    """
    render.setup_logging(debug)
    with render.errors(debug):
        if prompt is not None:
            check_prompt_size(prompt)  # first: everything below grows with the prompt's length
        if overwrite and out is None:
            raise InputError("--overwrite replaces an existing --out file: give --out FILE (the default name is new)")
        record = read_record(from_png) if from_png else None
        prompt, images = _prompt_and_images(prompt, files, image, record, from_png)
        config = sampler.config(record.generation_config() if record else None, size=size, seed=seed, layout=layout)
        given = controls.given(compose=compose, faces=faces)
        spec = _controls(record, given, from_png)  # --from repeats the structure controls, changed as given
        path = check_output_file(check_png_name(out or _default_out()), overwrite)
        loader, shared = _one_image_loader(load, record)
        follower = shared is not None and shared.rank != 0  # another rank reports
        arch = preflight_arch(loader)
        build = dict(config=config, controls=spec, cache_dir=load.cache_dir)
        request = build_request(prompt, images, arch=arch, **build)
        warnings = [*request.warnings, *_hash_warnings(record, request)]
        for w in [] if follower else warnings:
            render.warn(w)
        pipe = _load(loader, quiet=json_out or follower)
        pipe.branch_group = shared.group if shared is not None else None
        if not same_geometry(arch, pipe.arch):  # a hub model that was not cached: check again with its real configs
            request = build_request(prompt, images, arch=pipe.arch, **build)
        with render.progress(disable=follower) as bar:
            task = bar.add_task("Denoising", total=request.config.steps)
            result = pipe(request, progress=lambda i, n: bar.update(task, completed=i))
        if follower:
            return  # every rank holds the same picture: rank 0 writes it
        result.save(path, overwrite=overwrite)
    _report(result, path, json_out, warnings)


def _one_image_loader(load: LoadOptions, record: GenerationRecord | None) -> tuple[LoaderConfig, Shared | None]:
    """The loading options of a one-image run, and this process's place under torchrun (None without it)."""
    loader = load.loader_config(record.model if record else None)
    if loader.accel == "auto":  # one image: compiling would cost more than it saves
        loader = loader.replace(accel=SINGLE_IMAGE_AUTO)
    shared = join_torchrun()  # under torchrun: the ranks share each step's guidance branches
    if shared is not None and shared.device and loader.device is None:
        loader = loader.replace(device=shared.device)
    return loader, shared


def _prompt_and_images(prompt, files, named, record: GenerationRecord | None, source: str | None):
    """The prompt (given, or the record's) and its images by placeholder name (given, then the record's)."""
    if record and prompt is not None and os.path.isfile(prompt):  # --from X.png FILE...: files, not a prompt
        prompt, files = None, [prompt, *(files or [])]
    new_prompt = prompt
    prompt = prompt if prompt is not None else (record.prompt if record else None)
    if prompt is None:
        raise InputError("give a PROMPT (or --from a previous result)")
    check_prompt_size(prompt)
    images = assign_images(prompt, named or [], files or [])
    return prompt, _replayed_images(record, images, source, new_prompt) if record else images


def _default_out() -> Path:
    return Path("outputs") / f"sigma-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6:06d}.png"


def _load(cfg: LoaderConfig, quiet: bool):
    with render.console.status(f"Loading {cfg.model} ({cfg.mode})…", spinner="dots"):
        pipe = load_pipeline(cfg)
    if not quiet:
        render.console.print(f"[dim]model[/] {pipe.name} · [dim]mode[/] {pipe.mode} ({pipe.mode_reason})")
        if pipe.name == "tiny":
            render.console.print("[yellow]tiny model: random weights, the image is noise (use --model shapes)[/]")
    return pipe


def _report(result, path: Path, json_out: bool, warnings: list[str]) -> None:
    if json_out:
        data = {"output": str(Path(path).resolve()), "seconds": round(result.seconds, 3), "warnings": warnings}
        record = result.record.to_json()
        record.pop("warnings")  # the CLI's own list holds them, with the --from checks' warnings
        render.print_json(data | record)
        return
    h, w = result.size
    render.stdout.print(
        f"[green]✓[/] {escape(str(path))}  [dim]seed[/] {result.seed}  [dim]size[/] {w}x{h}  "
        f"[dim]time[/] {result.seconds:.1f} s"
    )
    if result.plan is not None:  # think mode: what the model planned (in full in the record)
        from sigma_studio.model.run.think import shown_plan

        render.stdout.print(f"[dim]plan[/] {escape(shown_plan(result.plan)) or '(empty)'}")


@grouped
def layout_cmd(
    *,
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the control images")],
    size: Size = None,
    controls: ControlOptions,
    model: Annotated[str, typer.Option("--model", "-m", help="whose image sizes to use")] = DEFAULT_MODEL,
    overwrite: Annotated[bool, flag("--overwrite", "replace control images already in --out")] = False,
    debug: DebugOpt = False,
) -> None:
    """Build and save the control images only, to see exactly what the model will get."""
    from .layout import save_layout

    render.setup_logging(debug)
    with render.errors(debug):
        arch = preflight_arch(LoaderConfig(model=absolute(model)))
        paths = save_layout(control_spec(**controls.given()), arch, parse_size(size), out, overwrite)
    for p in paths:
        render.stdout.print(f"[green]✓[/] {escape(str(p))}")
