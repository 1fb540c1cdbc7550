"""``sigma``: the command line. Each command lives in its own module and is a thin layer over the model package.

sigma generate "Place <id>the man <img1> next to <subject>the dog <img2>" --image img1=man.jpg --image img2=dog.png
sigma generate --from outputs/result.png --seed 8
sigma batch ./sigma-parquet --out runs/eval
sigma webui --model shapes
sigma space build space-out && sigma space deploy space-out your-name/sigma-studio
sigma download sigma
sigma tokens
sigma info
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape
from typer.exceptions import TyperException

from sigma_studio.model.config import DEFAULT_MODEL
from sigma_studio.model.errors import InputError
from sigma_studio.model.hub import HubOptions, cache_location, resolve

from . import render
from .average import EXAMPLES as AVERAGE_EXAMPLES
from .average import average
from .batch import batch
from .bench_cmd import bench_command
from .evaluate import EXAMPLES as EVAL_EXAMPLES
from .evaluate import evaluate_cmd
from .finetune import finetune as finetune_command
from .generate import EXAMPLES, generate, layout_cmd
from .options import CacheOpt, DebugOpt
from .shapes import app as shapes_app
from .sigmagen import app as sigmagen_app
from .space import app as space_app
from .webui import webui

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},  # (every command's context inherits them)
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    help="SIGMA Studio: interleaved multi-reference image generation (SIGMA / BAGEL-7B-MoT).",
    epilog="Run [b]sigma COMMAND --help[/] for a command's options and examples.",
)


def _version(value: bool) -> None:
    if value:
        from sigma_studio.model.request.record import package_version

        render.stdout.print(f"sigma-studio {package_version()}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", help="print the version and exit", callback=_version, is_eager=True, metavar="")
    ] = False,
) -> None:
    """SIGMA Studio: interleaved multi-reference image generation (SIGMA / BAGEL-7B-MoT)."""


app.command(epilog=EXAMPLES)(generate)
app.command(name="layout")(layout_cmd)
app.command()(batch)
app.command(name="eval", epilog=EVAL_EXAMPLES)(evaluate_cmd)
app.command()(webui)
SERVE_HELP = "Serve the web UI, its API and the OpenAI routes: webui under another name (--ray: on Ray Serve)"
app.command(name="serve", help=SERVE_HELP)(webui)
app.command()(finetune_command)
app.command(epilog=AVERAGE_EXAMPLES)(average)
app.add_typer(shapes_app, name="shapes")
app.add_typer(sigmagen_app, name="sigmagen")
app.add_typer(space_app, name="space")
app.command(name="bench")(bench_command)


@app.command()
def download(
    model: Annotated[str, typer.Argument(help="sigma | bagel | depth | HF repo id")] = DEFAULT_MODEL,
    depth_model: Annotated[str | None, typer.Option(help="with 'depth': which depth-estimation model")] = None,
    cache_dir: CacheOpt = None,
    token: Annotated[str | None, typer.Option(help="Hugging Face token (default: HF_TOKEN)")] = None,
    debug: DebugOpt = False,
) -> None:
    """Fetch weights ahead of time (only the files the model needs; partial downloads resume)."""
    from sigma_studio.model.hub import snapshot
    from sigma_studio.model.request.control import DEFAULT_DEPTH_MODEL, DEPTH_PATTERNS

    render.setup_logging(debug)
    with render.errors(debug):
        opts = HubOptions(cache_dir=cache_dir, token=token)
        if depth_model is not None and model != "depth":
            raise InputError(f"--depth-model is an option of `sigma download depth` (this command fetches {model})")
        if model == "tiny":
            render.stdout.print("tiny is built from its config with random weights: there is nothing to download")
            return
        if model == "depth":
            repo = depth_model or DEFAULT_DEPTH_MODEL
            path = snapshot(
                repo, DEPTH_PATTERNS, opts, "The depth model", f"sigma download depth --depth-model {repo}", ""
            )
            render.stdout.print(f"[green]✓[/] {repo}: {escape(str(path))}")
            return
        src = resolve(model, opts)
    render.stdout.print(f"[green]✓[/] {model}: configs in {escape(str(src.config_dir))}")
    if src.weights:
        render.stdout.print(f"  weights {escape(str(src.weights))}")


@app.command()
def tokens() -> None:
    """The 15 attribute tokens and what each takes from the image placed after it."""
    from rich.table import Table

    from sigma_studio.model.request.build import token_table

    table = Table(title="Attribute tokens: write one before an image, e.g. <style>this painting <img3>")
    table.add_column("token", style="bold")
    table.add_column("takes from its image")
    for token, help_text in token_table():
        table.add_row(token, help_text)
    render.stdout.print(table)


@app.command()
def info() -> None:
    """Versions, devices, free memory, which loading modes are possible, and where weights are cached."""
    from .info import collect, show

    with render.errors(False):
        show(collect(cache_location()))


render.unwrap_help(app)  # every command is registered by now


def main(argv: list[str] | None = None) -> None:
    """The ``sigma`` entry point: usage errors print one line, like every other error, and exit with code 2."""
    try:
        code = app(args=argv, prog_name="sigma", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        render.console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except TyperException as exc:  # a usage error: unknown option, a value of the wrong type, a missing argument
        ctx = getattr(exc, "ctx", None)
        where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if message:  # (no arguments at all: the help was printed instead)
            render.console.print(f"[bold red]error:[/] {escape(message)}{where}", soft_wrap=True)
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)
