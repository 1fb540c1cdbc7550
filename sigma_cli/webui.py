"""``sigma webui``: the Gradio UI from any folder (``app.py`` at the repository root runs the same for Spaces)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from sigma_studio.model.config import MODES, LoaderConfig

from . import render
from .options import DebugOpt, ModelOpt, flag


def webui(
    model: ModelOpt = None,
    mode: Annotated[str | None, typer.Option(help=" | ".join(MODES) + " \\[default: SIGMA_MODE or auto]")] = None,
    host: Annotated[str | None, typer.Option(help="address to listen on \\[default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="port \\[default: 7860]")] = None,
    share: Annotated[bool, flag("--share", "create a public gradio.live link")] = False,
    max_concurrency: Annotated[int, typer.Option(help="generations running at once")] = 1,
    outputs: Annotated[str, typer.Option(help="where results are written (never overwritten)")] = "outputs/webui",
    keep_hours: Annotated[
        float, typer.Option(help="delete results and uploads older than this (0 = keep everything)")
    ] = 24.0,
    debug: DebugOpt = False,
) -> None:
    """Serve the web UI. Unset options read SIGMA_MODEL, SIGMA_MODE, GRADIO_SERVER_NAME and GRADIO_SERVER_PORT.

    [b]Examples[/]

      sigma webui --model shapes          [dim]# the shipped shapes-world model: runs on any CPU[/]

      sigma webui --mode nf4 --port 8080  [dim]# SIGMA in 4 bits on a 24 GB GPU[/]
    """
    render.setup_logging(debug)
    with render.errors(debug):
        serve(
            model or os.environ.get("SIGMA_MODEL", "sigma"),
            mode or os.environ.get("SIGMA_MODE", LoaderConfig.mode),
            host or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
            port or int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
            share=share,
            max_concurrency=max_concurrency,
            outputs=outputs,
            keep_hours=keep_hours,
        )


def serve(
    model: str, mode: str, host: str, port: int, *, share=False, max_concurrency=1, outputs="outputs/webui",
    keep_hours=24.0,
):  # fmt: skip
    """Load the model once and serve the UI, its API and ``POST /api/v1/generate`` (blocks until stopped)."""
    from sigma_studio.examples import ROOT as EXAMPLES
    from sigma_studio.model import LoaderConfig, load_pipeline
    from sigma_studio.model.errors import MissingDependencyError
    from sigma_studio.model.files import check_output_dir

    try:
        from sigma_studio.webui.blocks import CSS, build_demo
        from sigma_studio.webui.jobs import Jobs
        from sigma_studio.webui.rest import mount_rest
    except ImportError as exc:
        raise MissingDependencyError("gradio", "webui", f"The web UI ({exc.name} is missing)") from None
    check_output_dir(outputs, "--outputs")
    gpu_wrapper = None
    if os.environ.get("SPACES_ZERO_GPU"):  # ZeroGPU: import spaces before CUDA starts; hold a GPU only to generate
        import spaces

        gpu_wrapper = spaces.GPU(duration=180)
    with render.console.status(f"Loading {model} ({mode})…", spinner="dots"):
        pipe = load_pipeline(LoaderConfig(model=model, mode=mode))
    jobs = Jobs(max_concurrency)  # one queue for the page, the Gradio API and the REST route
    demo = build_demo(
        pipe, outputs=outputs, max_concurrency=max_concurrency, gpu_wrapper=gpu_wrapper, jobs=jobs,
        keep_hours=keep_hours,
    )  # fmt: skip
    demo.queue(max_size=32).launch(
        server_name=host, server_port=port, share=share, css=CSS, max_file_size="20mb",
        allowed_paths=[outputs, str(EXAMPLES)], show_error=False, prevent_thread_lock=True,
    )  # fmt: skip
    # demo.app exists once launched; routes added now are served at once, on the local and the --share URL alike
    mount_rest(demo.app, pipe, outputs=outputs, jobs=jobs)
    demo.block_thread()
