"""``sigma``: generate, batch, download, info. Each command parses, builds configs, calls the pipeline, renders.

sigma generate "Place <id>the man <img1> next to <subject>the dog <img2>" --image img1=man.jpg --image img2=dog.png
sigma generate --from outputs/result.png --seed 8
sigma batch ./sigma-parquet --out runs/eval
sigma download sigma
sigma info
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from sigma_studio.model import LoaderConfig, load_pipeline
from sigma_studio.model.hub import HubOptions, cache_location, resolve
from sigma_studio.model.images import save_png

from . import render
from .finetune import finetune as finetune_command
from .params import assign_images, generation_config, parse_interval, parse_size, png_metadata, read_params
from .shapes import app as shapes_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    help="SIGMA Studio: interleaved multi-reference image generation (SIGMA / BAGEL-7B-MoT).",
)

# Loading options shared by generate and batch (map one to one onto LoaderConfig)
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="sigma | bagel | shapes | tiny | HF repo id | directory")]
ModeOpt = Annotated[str, typer.Option(help="auto | bf16 | nf4 | int8 | offload | multi-gpu | cpu")]
GpuMemOpt = Annotated[str | None, typer.Option(help="GPU budget for --mode offload, e.g. 10GiB")]
OffloadOpt = Annotated[str | None, typer.Option(help="folder for layers offloaded to disk")]
CacheOpt = Annotated[str | None, typer.Option(help="Hugging Face cache folder (default: HF_HOME)")]
DebugOpt = Annotated[bool, typer.Option(help="show tracebacks")]
# Sampler options (None = keep GenerationConfig's default, or the --from file's value)
Steps = Annotated[int | None, typer.Option(help="denoising steps [default: 50]")]
CfgText = Annotated[float | None, typer.Option("--cfg-text", help="text guidance scale [default: 4.0]")]
CfgImg = Annotated[float | None, typer.Option("--cfg-img", help="image guidance scale [default: 2.0]")]
CfgInterval = Annotated[str | None, typer.Option(help="guidance interval LOW,HIGH of t [default: 0,1]")]
Renorm = Annotated[str | None, typer.Option(help="global | channel | text_channel [default: text_channel]")]
Shift = Annotated[float | None, typer.Option(help="timestep shift [default: 3.0]")]
Seed = Annotated[int | None, typer.Option(help="random seed [default: random]")]
Layout = Annotated[str | None, typer.Option(help="released | trained [default: the checkpoint's]")]
GroupMask = Annotated[bool | None, typer.Option("--group-mask/--no-group-mask", help="SIGMA group-scoped mask")]


def _loader(model: str, mode: str, max_gpu_memory, offload_dir, cache_dir) -> LoaderConfig:
    return LoaderConfig(
        model=model, mode=mode, max_gpu_memory=max_gpu_memory, offload_dir=offload_dir, cache_dir=cache_dir
    )


def _load(cfg: LoaderConfig, quiet: bool):
    with render.console.status(f"Loading {cfg.model} ({cfg.mode})…", spinner="dots"):
        pipe = load_pipeline(cfg)
    if not quiet:
        render.console.print(f"[dim]model[/] {pipe.name} · [dim]mode[/] {pipe.mode} ({pipe.mode_reason})")
        if pipe.name == "tiny":
            render.console.print("[yellow]tiny model: random weights, the image is noise (use --model sigma)[/]")
    return pipe


# Structure control options (SIGMA layout and SIGMA-GEN subjects)
CannyOpt = Annotated[str | None, typer.Option(help="image whose Canny edges become a <layout> reference")]
CannyLowOpt = Annotated[int, typer.Option(help="Canny low threshold")]
CannyHighOpt = Annotated[int, typer.Option(help="Canny high threshold")]
CannyBlurOpt = Annotated[int, typer.Option(help="Gaussian blur before Canny (odd; 0 = none)")]
DepthOpt = Annotated[str | None, typer.Option(help="image whose estimated depth becomes a <layout> reference")]
DepthMapOpt = Annotated[str | None, typer.Option(help="a ready depth map to use as the <layout> reference")]
BoxOpt = Annotated[list[str] | None, typer.Option("--box", help="x0,y0,x1,y1[:label] (pixels or 0..1), repeatable")]
MaskOpt = Annotated[list[str] | None, typer.Option("--mask", help="subject mask image, repeatable")]
SubjectOpt = Annotated[
    list[str] | None, typer.Option("--subject", help="identity image [@box=..|@mask=..[,depth=..]|@box3d=..]")
]
BackgroundOpt = Annotated[str | None, typer.Option(help="keep this background; subjects are inserted into it")]


def _controls(canny, canny_low, canny_high, canny_blur, depth, depth_map, box, mask, subject, background):
    from .controls import ControlOptions

    return ControlOptions(
        canny, canny_low, canny_high, canny_blur, depth, depth_map,
        boxes=box or [], masks=mask or [], subjects=subject or [], background=background,
    )  # fmt: skip


def _request(pipe, prompt: str, images: dict, controls, config, compose: bool, faces: bool):
    """Fold structure controls into (prompt, images, config, insertion)."""
    from sigma_studio.model.control import with_layout_reference
    from sigma_studio.model.multisubject import build_request

    from .controls import layout_controls, parse_subjects, subject_size

    if controls.subjects:
        size = subject_size(controls, pipe.arch, config.size)
        bg = _open(controls.background) if controls.background else None
        req = build_request(
            parse_subjects(controls, size), prompt, size, background=bg, full_prompt=compose, faces=faces
        )
        return req.prompt, {"img1": req.images[0], "img2": req.images[1]}, config.replace(size=size), req.insertion
    from sigma_studio.model.prompt import image_number

    images = dict(images)
    for control in layout_controls(controls, pipe.arch, config.size).values():
        name = f"img{max([0, *(image_number(k) for k in images)]) + 1}"
        images[name] = control
        prompt = with_layout_reference(prompt, name)
    return prompt, images, config, None


def _open(path: str):
    from sigma_studio.model.images import open_image, to_rgb

    return to_rgb(open_image(path))


@app.command()
def generate(
    prompt: Annotated[str | None, typer.Argument(help="interleaved prompt, e.g. 'a man <id> <img1> ...'")] = None,
    files: Annotated[list[str] | None, typer.Argument(help="reference images, in prompt order")] = None,
    image: Annotated[list[str] | None, typer.Option("--image", "-i", help="NAME=FILE, e.g. img1=man.jpg")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="output PNG [default: outputs/<time>.png]")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT [default: the last reference's size]")] = None,
    steps: Steps = None,
    cfg_text: CfgText = None,
    cfg_img: CfgImg = None,
    cfg_interval: CfgInterval = None,
    renorm: Renorm = None,
    shift: Shift = None,
    seed: Seed = None,
    layout: Layout = None,
    group_mask: GroupMask = None,
    canny: CannyOpt = None,
    canny_low: CannyLowOpt = 100,
    canny_high: CannyHighOpt = 200,
    canny_blur: CannyBlurOpt = 0,
    depth: DepthOpt = None,
    depth_map: DepthMapOpt = None,
    box: BoxOpt = None,
    mask: MaskOpt = None,
    subject: SubjectOpt = None,
    background: BackgroundOpt = None,
    compose: Annotated[bool, typer.Option(help="with --subject: the prompt describes the whole picture")] = False,
    faces: Annotated[
        bool, typer.Option(help="with --subject: subjects are people (<id> instead of <subject>)")
    ] = False,
    from_png: Annotated[str | None, typer.Option("--from", help="repeat a result from its PNG metadata")] = None,
    model: ModelOpt = "sigma",
    mode: ModeOpt = "auto",
    max_gpu_memory: GpuMemOpt = None,
    offload_dir: OffloadOpt = None,
    cache_dir: CacheOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="print a JSON result instead")] = False,
    debug: DebugOpt = False,
) -> None:
    """Generate one image from an interleaved prompt, reference images and optional structure controls."""
    render.setup_logging(debug)
    with render.errors(debug):
        base = read_params(from_png) if from_png else None
        prompt = prompt if prompt is not None else (base["prompt"] if base else None)
        if prompt is None:
            raise typer.BadParameter("give a PROMPT (or --from a previous result)", param_hint="PROMPT")
        images = {**(base["images"] if base else {}), **assign_images(prompt, image or [], files or [])}
        config = generation_config(
            base["config"] if base else None,
            **dict(steps=steps, cfg_text_scale=cfg_text, cfg_img_scale=cfg_img, timestep_shift=shift),
            **dict(cfg_interval=parse_interval(cfg_interval), cfg_renorm_type=renorm, size=parse_size(size)),
            **dict(seed=seed, layout=layout, group_mask=group_mask),
        )
        controls = _controls(canny, canny_low, canny_high, canny_blur, depth, depth_map, box, mask, subject, background)
        if base and base.get("controls") and not (controls.any_layout or controls.subjects):
            controls = type(controls)(**base["controls"])  # --from repeats the structure controls too
        controls.cache_dir = cache_dir
        source = base["model"] if base and model == "sigma" else model
        source = str(Path(source).resolve()) if Path(source).exists() else source  # --from works from anywhere
        pipe = _load(_loader(source, mode, max_gpu_memory, offload_dir, cache_dir), json_out)
        full_prompt, all_images, config, insertion = _request(pipe, prompt, images, controls, config, compose, faces)
        with render.progress() as bar:
            task = bar.add_task("Denoising", total=config.steps - 1)
            result = pipe(
                full_prompt, all_images, config=config, insertion=insertion,
                progress=lambda i, n: bar.update(task, completed=i),
            )  # fmt: skip
        path = out or Path("outputs") / f"sigma-{time.strftime('%Y%m%d-%H%M%S')}-{result.seed}.png"
        meta = png_metadata(prompt, images, result.config, source, result.seed, controls)
        save_png(result.image, path, meta)
    _report(result, path, pipe, json_out)


def _report(result, path: Path, pipe, json_out: bool) -> None:
    for w in result.warnings:
        render.console.print(f"[yellow]warning:[/] {w}")
    summary = {"output": str(Path(path).resolve()), "seed": result.seed, "seconds": round(result.seconds, 3)}
    summary |= {
        "size": [result.size[1], result.size[0]],
        "model": pipe.name,
        "mode": pipe.mode,
        "layout": result.layout,
    }
    if json_out:
        render.print_json(summary | {"warnings": list(result.warnings)})
    else:
        render.stdout.print(f"[green]✓[/] {path}  [dim]seed[/] {result.seed}  [dim]time[/] {result.seconds:.1f} s")


@app.command(name="layout")
def layout_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the control images")],
    size: Annotated[str | None, typer.Option(help="output WIDTHxHEIGHT")] = None,
    canny: CannyOpt = None,
    canny_low: CannyLowOpt = 100,
    canny_high: CannyHighOpt = 200,
    canny_blur: CannyBlurOpt = 0,
    depth: DepthOpt = None,
    depth_map: DepthMapOpt = None,
    box: BoxOpt = None,
    mask: MaskOpt = None,
    subject: SubjectOpt = None,
    background: BackgroundOpt = None,
    model: Annotated[str, typer.Option(help="whose image sizes to use")] = "sigma",
    debug: DebugOpt = False,
) -> None:
    """Build and save the control images only, to see exactly what the model will get."""
    from sigma_studio.model.config import PRESETS, sigma_7b
    from sigma_studio.model.multisubject import identity_dictionary, regions, routing_maps, spatial_control

    from .controls import layout_controls, parse_subjects, save_controls, subject_size

    render.setup_logging(debug)
    with render.errors(debug):
        arch = PRESETS["tiny"]() if model == "tiny" else sigma_7b()
        controls = _controls(canny, canny_low, canny_high, canny_blur, depth, depth_map, box, mask, subject, background)
        images = layout_controls(controls, arch, parse_size(size))
        if controls.subjects:
            hw = subject_size(controls, arch, parse_size(size))
            subjects = parse_subjects(controls, hw)
            reg = regions(subjects, hw)
            asc, desc = routing_maps(reg)
            images |= {"dictionary": identity_dictionary(subjects), "spatial": spatial_control(reg)}
            images |= {"routing_ascending": _l(asc), "routing_descending": _l(desc), "structure": _l(reg.structure)}
        if not images:
            raise typer.BadParameter("nothing to build: give --canny, --depth, --depth-map, --box or --subject")
        paths = save_controls(images, out)
    for p in paths:
        render.stdout.print(f"[green]✓[/] {p}")


def _l(arr):
    from PIL import Image

    return Image.fromarray(arr)


@app.command()
def batch(
    source: Annotated[str, typer.Argument(help="parquet file, folder of parquet files, or HF dataset id")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (resumes if it exists)")],
    limit: Annotated[int | None, typer.Option(help="stop after this many rows")] = None,
    steps: Steps = None,
    cfg_text: CfgText = None,
    cfg_img: CfgImg = None,
    seed: Annotated[int, typer.Option(help="seed for every row")] = 0,
    layout: Layout = None,
    group_mask: GroupMask = None,
    model: ModelOpt = "sigma",
    mode: ModeOpt = "auto",
    max_gpu_memory: GpuMemOpt = None,
    offload_dir: OffloadOpt = None,
    cache_dir: CacheOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Generate an image for every row of SIGMA-format parquet data (last image = ground truth)."""
    from sigma_studio.model.batch import run_batch
    from sigma_studio.model.dataset import iter_rows, parquet_files

    render.setup_logging(debug)
    with render.errors(debug):
        config = generation_config(
            None, steps=steps, cfg_text_scale=cfg_text, cfg_img_scale=cfg_img, seed=seed, layout=layout or "trained"
        ).replace(group_mask=group_mask)
        pipe = _load(_loader(model, mode, max_gpu_memory, offload_dir, cache_dir), False)
        rows = iter_rows(parquet_files(source, HubOptions(cache_dir=cache_dir)))
        with render.progress(transient=False) as bar:
            task = bar.add_task("Rows", total=limit)
            summary = run_batch(pipe, rows, out, config, limit=limit, on_row=lambda r, s: bar.advance(task))
    render.stdout.print(
        f"[green]✓[/] {summary.generated} generated, {summary.skipped_existing} already done, "
        f"[{'red' if summary.failed else 'dim'}]{summary.failed} failed[/] in {summary.seconds:.1f} s → {out}"
    )
    if summary.failed:
        render.console.print(f"[dim]failures are listed in {out / 'failures.jsonl'}[/]")


@app.command()
def download(
    model: Annotated[str, typer.Argument(help="sigma | bagel | depth | HF repo id")] = "sigma",
    depth_model: Annotated[str | None, typer.Option(help="with 'depth': which depth-estimation model")] = None,
    cache_dir: CacheOpt = None,
    token: Annotated[str | None, typer.Option(help="Hugging Face token (default: HF_TOKEN)")] = None,
    debug: DebugOpt = False,
) -> None:
    """Fetch weights ahead of time (only the files the model needs; partial downloads resume)."""
    from sigma_studio.model.control import DEFAULT_DEPTH_MODEL, DEPTH_PATTERNS
    from sigma_studio.model.hub import snapshot

    render.setup_logging(debug)
    with render.errors(debug):
        opts = HubOptions(cache_dir=cache_dir, token=token)
        if model == "depth":
            repo = depth_model or DEFAULT_DEPTH_MODEL
            path = snapshot(
                repo, DEPTH_PATTERNS, opts, "The depth model", f"sigma download depth --depth-model {repo}", ""
            )
            render.stdout.print(f"[green]✓[/] {repo}: {path}")
            return
        src = resolve(model, opts)
    render.stdout.print(f"[green]✓[/] {model}: configs in {src.config_dir}")
    if src.weights:
        render.stdout.print(f"  weights {src.weights}")


app.command()(finetune_command)
app.add_typer(shapes_app, name="shapes")


@app.command()
def bench(
    preset: Annotated[str, typer.Option(help="bagel-7b-mot (full scale) | tiny")] = "bagel-7b-mot",
    modes: Annotated[str, typer.Option(help="comma-separated: bf16,nf4,int8,offload,cpu")] = "bf16,nf4,int8,offload",
    device: Annotated[str, typer.Option(help="cuda | cpu")] = "cuda",
    size: Annotated[int, typer.Option(help="output and reference side in pixels")] = 1024,
    steps: Annotated[int, typer.Option(help="denoising steps")] = 50,
    max_gpu_memory: GpuMemOpt = "8GiB",
    out: Annotated[Path, typer.Option(help="JSON report")] = Path("bench.json"),
) -> None:
    """Time text-to-image and SIGMA compositional generation in every mode (random weights, real FLOPs)."""
    from rich.table import Table

    from sigma_studio.cli.bench import benchmark

    report = benchmark(preset, modes.split(","), device, size, steps, out, max_gpu_memory)
    table = Table(title=f"{report['preset']} on {report['device']} · {size}px · {steps} steps · "
                        f"matmul {report['matmul_tflops']:.1f} TFLOP/s")  # fmt: skip
    for col in ("mode", "case", "s / image", "s / step", "outside loop s", "peak GiB", "TFLOP", "of peak"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        table.add_row(r["mode"], r["case"], f"{r['seconds']:.2f}", f"{r['seconds_per_step']:.3f}",
                      f"{r['outside_loop_seconds']:.2f}", f"{r['peak_gib']:.1f}", f"{r['tflop']:.1f}",
                      f"{100 * r['fraction_of_peak']:.0f}%")  # fmt: skip
    render.stdout.print(table)
    for mode, err in report["equivalence_rel_error"].items():
        render.stdout.print(f"{mode}: batched vs plain branches, relative error of the final latents {err:.2e}")
    for mode, msg in report["errors"].items():
        render.console.print(f"[yellow]{mode} did not run:[/] {msg}")
    render.stdout.print(f"report: {out}")


@app.command()
def info() -> None:
    """Versions, devices, free memory, which loading modes are possible, and where weights are cached."""
    from .info import collect, show

    show(collect(cache_location()))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
