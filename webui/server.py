"""Starting the web server: the page, its named API and the REST route, held to the server's limits.

``sigma webui`` (and so ``app.py``) and the tests start a server through :func:`launch`, so what is tested over HTTP is
what is served: the same middleware, the same upload limits, the same allowed folders.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from starlette.middleware import Middleware

from sigma_studio.model.images import restrict_formats

from .jobs import Jobs
from .limits import BodyLimit, WebLimits, WebSettings
from .openai_api import mount_openai
from .rest import mount_rest


def launch(
    demo, pipe, *, outputs: str | Path, jobs: Jobs, limits: WebLimits, host: str = WebSettings.host,
    port: int = WebSettings.port, share: bool = False, allowed_paths=(), css: str | None = None, quiet: bool = False,
    max_queue: int = WebSettings.max_queue, api_key: str | None = None,
):  # fmt: skip
    """Launch ``demo`` (from :func:`webui.blocks.build_demo`, built with the same ``jobs`` and ``limits``) without
    blocking, then mount ``POST /api/v1/generate`` and the OpenAI-compatible routes on it; returns ``demo``.
    ``api_key`` (when given) is required by those routes as ``Authorization: Bearer``; the page stays open."""
    # PIL's own decompression-bomb guard, for the pictures Gradio decodes itself (the mask editor's layers): the
    # server's pixel limit, over which PIL refuses a picture from its header (this process serves, and does nothing
    # else that opens pictures without its own limit)
    Image.MAX_IMAGE_PIXELS = limits.max_pixels // 2
    restrict_formats()  # and only the formats references are read in, whoever decodes (Gradio's components too)
    demo.queue(max_size=max_queue).launch(
        server_name=host, server_port=port, share=share, css=css, max_file_size=f"{limits.max_upload_mb}mb",
        allowed_paths=[str(outputs), *map(str, allowed_paths)], show_error=False, prevent_thread_lock=True,
        quiet=quiet, app_kwargs={"middleware": [Middleware(BodyLimit, limits=limits)]},
    )  # fmt: skip
    # demo.app exists once launched; routes added now are served at once, on the local and the --share URL alike
    mount_routes(demo.app, pipe, outputs=outputs, jobs=jobs, limits=limits, api_key=api_key, max_queue=max_queue)
    return demo


def mount_routes(app, pipe, *, outputs, jobs: Jobs, limits: WebLimits, api_key: str | None, max_queue: int) -> None:
    """The REST route and the OpenAI routes on ``app``, through the page's queue ``jobs``."""
    mount_rest(app, pipe, outputs=outputs, jobs=jobs, max_waiting=max_queue, limits=limits, api_key=api_key)
    mount_openai(app, pipe, outputs=outputs, jobs=jobs, limits=limits, api_key=api_key, max_waiting=max_queue)


def asgi_app(
    demo, pipe, *, outputs: str | Path, jobs: Jobs, limits: WebLimits, css: str | None = None, allowed_paths=(),
    api_key: str | None = None, max_queue: int = WebSettings.max_queue,
):  # fmt: skip
    """What :func:`launch` serves, as an ASGI app for another server to run (Ray Serve's ingress): the REST and
    OpenAI routes first, the page at ``/``, all behind the same body limit."""
    import gradio as gr
    from fastapi import FastAPI

    Image.MAX_IMAGE_PIXELS = limits.max_pixels // 2  # (as in launch)
    restrict_formats()
    app = FastAPI(middleware=[Middleware(BodyLimit, limits=limits)])
    mount_routes(app, pipe, outputs=outputs, jobs=jobs, limits=limits, api_key=api_key, max_queue=max_queue)
    demo.queue(max_size=max_queue)
    return gr.mount_gradio_app(
        app, demo, path="/", css=css, max_file_size=f"{limits.max_upload_mb}mb", show_error=False,
        allowed_paths=[str(outputs), *map(str, allowed_paths)],
    )  # fmt: skip
