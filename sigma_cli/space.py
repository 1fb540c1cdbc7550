"""``sigma space``: build the Hugging Face Space that serves the web UI, then upload it.

sigma space build space-out                          # CPU Space: the shipped shapes-world model, runs offline
sigma space build space-gpu --hardware zero-gpu      # ZeroGPU Space: SIGMA, spaces.GPU per generation
sigma space deploy space-out your-name/sigma-studio  # create the Space if missing, upload the folder
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from . import render
from .options import DebugOpt, flag
from .space_files import DEFAULT_HARDWARE, DEFAULT_TITLE, HARDWARE

app = typer.Typer(
    no_args_is_help=True,
    help="A Hugging Face Space of the web UI: build the folder (runs as it is: python app.py), then deploy it.",
)

HardwareOpt = Annotated[
    str,
    typer.Option(
        help="cpu: the shapes-world model that ships in the package (free CPU, offline) | zero-gpu: SIGMA on "
        "ZeroGPU, each generation holding a GPU for the seconds its steps and references need"
    ),
]


@app.command()
def build(
    out: Annotated[Path, typer.Argument(help="the folder to write (missing or empty, or any with --overwrite)")],
    hardware: HardwareOpt = DEFAULT_HARDWARE,
    title: Annotated[str, typer.Option(help="the Space's title on its card")] = DEFAULT_TITLE,
    overwrite: Annotated[bool, flag("--overwrite", "replace OUT and everything in it")] = False,
    debug: DebugOpt = False,
) -> None:
    """Write a Space folder: README.md (its card), app.py, requirements.txt, and the package itself.

    [b]Examples[/]

      sigma space build space-out                      [dim]# CPU: the shapes model (cd space-out && python app.py)[/]

      sigma space build space-gpu --hardware zero-gpu  [dim]# SIGMA on ZeroGPU[/]
    """
    from .space_build import build_space

    render.setup_logging(debug)
    with render.errors(debug):
        with render.console.status(f"Building the {hardware} Space in {escape(str(out))}…", spinner="dots"):
            built = build_space(out, hardware, overwrite=overwrite, title=title)
    hw = HARDWARE[built.hardware]
    render.stdout.print(
        f"[green]✓[/] {escape(str(built.folder))}: a {hw.label} Space serving --model {hw.model} "
        f"(sigma-studio {built.version}, carried from the {built.carried_from} package)",
        soft_wrap=True,
    )
    render.stdout.print(f"  run it here:  cd {escape(str(built.folder))} && pip install -r requirements.txt && "
                        "python app.py")  # fmt: skip
    render.stdout.print(f"  upload it:    sigma space deploy {escape(str(built.folder))} YOUR-NAME/SPACE-NAME")


@app.command()
def deploy(
    folder: Annotated[Path, typer.Argument(help="a folder written by sigma space build")],
    repo: Annotated[str, typer.Argument(help="the Space, owner/name (created when missing)")],
    private: Annotated[bool, flag("--private", "create the Space private (an existing one keeps its setting)")] = False,
    token: Annotated[
        str | None, typer.Option(help="Hugging Face token with write access \\[default: HF_TOKEN or hf auth login]")
    ] = None,
    message: Annotated[str | None, typer.Option(help="the commit message")] = None,
    debug: DebugOpt = False,
) -> None:
    """Upload a built Space to the hub, creating REPO when missing.

    A new Space gets the Gradio SDK and the card's hardware; its files then become exactly FOLDER's, in one commit
    (files the folder no longer has are deleted from the Space).

    [b]Examples[/]

      sigma space deploy space-out your-name/sigma-studio

      HF_TOKEN=hf_... sigma space deploy space-gpu your-org/sigma --private
    """
    from .space_deploy import deploy_space

    render.setup_logging(debug)
    with render.errors(debug):
        with render.console.status(f"Uploading {escape(str(folder))} to {escape(repo)}…", spinner="dots"):
            done = deploy_space(folder, repo, token=token, private=private, message=message)
    render.stdout.print(f"[green]✓[/] {escape(done.url)} ({done.hardware}): the Space builds and starts there now",
                        soft_wrap=True)  # fmt: skip
