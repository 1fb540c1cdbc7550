"""``sigma webui``: the Gradio UI from any folder (``app.py`` at the repository root runs the same for Spaces)."""

from __future__ import annotations

import errno
import os
import socket
from typing import Annotated

import typer

from sigma_studio.model.config import DEFAULT_MODEL, MODES, LoaderConfig
from sigma_studio.model.errors import InputError, SigmaError
from sigma_studio.webui.limits import WebLimits, WebSettings
from sigma_studio.webui.ray_serve import RayServing, parse_autoscale

from . import render
from .options import DebugOpt, ModelOpt, flag

L = WebLimits()  # the server's limits: each flag's default (docs/SECURITY.md)
W = WebSettings()  # the server's other options: each flag's default
GPUS_HELP = (
    "all | 0,1,3: one pipeline per listed CUDA GPU, one generation on each at once \\[default: one pipeline]; "
    "cpu:N loads N pipelines on the CPU (for testing)"
)


KEY_HELP = "require Authorization: Bearer KEY on the REST and OpenAI routes (the page and its Gradio API stay open)"
ApiKeyOpt = Annotated[
    str | None, typer.Option(help=KEY_HELP, envvar="SIGMA_API_KEY", show_envvar=True, show_default=False)
]
KeepOpt = Annotated[float, typer.Option(min=0, help="delete results and uploads older than this (0 = keep everything)")]
# --ray and its placement (webui/ray_serve.py::RayServing)
RayOpt = Annotated[bool, flag("--ray", "serve on Ray Serve: one replica per GPU, one machine or a cluster")]
ADDRESS_HELP = "--ray: a running cluster (auto, or ray://head:10001) \\[default: RAY_ADDRESS, else a local one]"
RayAddressOpt = Annotated[str | None, typer.Option(help=ADDRESS_HELP, show_default=False)]
ReplicasOpt = Annotated[
    int | None, typer.Option(help="--ray: a fixed number of replicas \\[default: one per GPU]", show_default=False)
]
AutoscaleOpt = Annotated[
    str | None, typer.Option(help="--ray: MIN:MAX replicas, scaled on the requests in flight", show_default=False)
]
ReplicaGpusOpt = Annotated[
    float | None, typer.Option(help="--ray: GPUs per replica \\[default: 1, or 0 without GPUs]", show_default=False)
]
ReplicaCpusOpt = Annotated[float, typer.Option(help="--ray: CPUs per replica")]


def webui(
    model: ModelOpt = None,
    mode: Annotated[str | None, typer.Option(help=" | ".join(MODES) + " \\[default: SIGMA_MODE or auto]")] = None,
    host: Annotated[str | None, typer.Option(help=f"address to listen on \\[default: {W.host}]")] = None,
    port: Annotated[int | None, typer.Option(help=f"port \\[default: {W.port}]")] = None,
    share: Annotated[bool, flag("--share", "create a public gradio.live link")] = False,
    max_concurrency: Annotated[int, typer.Option(min=1, help="generations running at once (one pipeline)")] = W.slots,
    gpus: Annotated[str | None, typer.Option(help=GPUS_HELP, show_default=False)] = None,
    outputs: Annotated[
        str, typer.Option("--outputs", "--out", help="where results are written (never overwritten)")
    ] = W.outputs,
    keep_hours: KeepOpt = W.keep_hours,
    max_prompt_chars: Annotated[int, typer.Option(help="characters of one prompt")] = L.max_prompt_chars,
    max_request_mb: Annotated[int, typer.Option(help="one REST request's body, in MB")] = L.max_request_mb,
    max_event_kb: Annotated[int, typer.Option(help="one page or Gradio API event's body, in KB")] = L.max_event_kb,
    max_upload_mb: Annotated[int, typer.Option(help="one uploaded file, in MB")] = L.max_upload_mb,
    max_megapixels: Annotated[int, typer.Option(help="one uploaded picture (read before decoding)")] = L.max_megapixels,
    max_json_depth: Annotated[int, typer.Option(help="nesting of a JSON body")] = L.max_json_depth,
    max_json_items: Annotated[int, typer.Option(help="arrays, objects and commas of a JSON body")] = L.max_json_items,
    api_key: ApiKeyOpt = None,
    ray: RayOpt = False,
    ray_address: RayAddressOpt = None,
    replicas: ReplicasOpt = None,
    autoscale: AutoscaleOpt = None,
    replica_gpus: ReplicaGpusOpt = None,
    replica_cpus: ReplicaCpusOpt = RayServing.replica_cpus,
    debug: DebugOpt = False,
) -> None:
    """Serve the web UI. Unset options read SIGMA_MODEL, SIGMA_MODE, GRADIO_SERVER_NAME and GRADIO_SERVER_PORT.

    [b]Examples[/]

      sigma webui --model shapes          [dim]# the shipped shapes-world model: runs on any CPU[/]

      sigma webui --mode nf4 --port 8080  [dim]# SIGMA in 4 bits on a 24 GB GPU[/]

      sigma webui --gpus all              [dim]# one pipeline per GPU, one generation on each at once[/]

      sigma serve --ray --autoscale 1:8   [dim]# on a Ray cluster: one to eight GPU replicas, one page[/]
    """
    render.setup_logging(debug, once=False)  # a server runs for days: every warning of its own is shown
    with render.errors(debug):
        limits = WebLimits(max_prompt_chars, max_request_mb, max_event_kb, max_upload_mb, max_megapixels,
                           max_json_depth, max_json_items)  # fmt: skip
        model = model or os.environ.get("SIGMA_MODEL", DEFAULT_MODEL)
        mode = mode or os.environ.get("SIGMA_MODE", LoaderConfig.mode)
        host = host or os.environ.get("GRADIO_SERVER_NAME", W.host)
        port = server_port(port)
        api_key = checked_key(api_key)
        if not ray:
            if any(v is not None for v in (ray_address, replicas, autoscale, replica_gpus)):
                raise InputError("--ray-address, --replicas, --autoscale and --replica-gpus are options of --ray")
            serve(model, mode, host, port, share=share, max_concurrency=max_concurrency, outputs=outputs,
                  keep_hours=keep_hours, gpus=gpus, limits=limits, api_key=api_key)  # fmt: skip
            return
        if share or gpus or max_concurrency != W.slots:
            raise InputError("--ray places replicas itself: leave out --share, --gpus and --max-concurrency")
        serving = RayServing(ray_address, replicas, parse_autoscale(autoscale), replica_gpus, replica_cpus)
        web = WebSettings(outputs, keep_hours, limits, api_key)
        serve_on_ray(LoaderConfig(model=model, mode=mode), serving, web, host, port)


def check_address(host: str, port: int) -> None:
    """Fail in one line, before any model loads, where the server could not listen: a port out of range, a host
    that is not an address, an address that is not this machine's, a port another program holds. The probe binds
    as the server will (uvicorn: IPv6 for a host with a colon, IPv4 otherwise; ``[::1]`` is taken as ``::1``)."""
    if not 1 <= port <= 65535:
        raise InputError(f"--port {port} is not a port: use a number from 1 to 65535")
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    try:
        address = socket.getaddrinfo(bare, port, family, socket.SOCK_STREAM)[0][4]
    except (socket.gaierror, UnicodeError):
        raise InputError(f"--host {host!r} is not an address: use 127.0.0.1 (this machine only) or 0.0.0.0 (every "
                         "interface)") from None  # fmt: skip
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server's own: TIME_WAIT is free
            probe.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise InputError(f"port {port} is in use on {host}: pass --port N, or stop the program that holds "
                             "it") from None  # fmt: skip
        reason = exc.strerror or type(exc).__name__
        raise InputError(f"cannot listen on {host}:{port} ({reason}): pass another --host or --port") from None


def checked_key(api_key: str | None) -> str | None:
    """The API key without the spaces or line end a secrets file adds (a key kept with them would never match); one
    given empty is refused, not taken as "no key" (which would serve the routes open without a word)."""
    if api_key is None:
        return None
    key = api_key.strip()
    if not key:
        raise InputError("--api-key (or SIGMA_API_KEY) is empty: give the key, or unset it to serve without one")
    return key


def server_port(port: int | None) -> int:
    """``--port``, else GRADIO_SERVER_PORT, else :attr:`WebSettings.port`."""
    if port is not None:
        return port
    text = os.environ.get("GRADIO_SERVER_PORT", str(W.port))
    if not text.strip().isdigit():
        raise InputError(f"GRADIO_SERVER_PORT={text!r} is not a port: unset it, or pass --port N")
    return int(text)


def serve_on_ray(loader: LoaderConfig, serving: RayServing, web: WebSettings, host: str, port: int) -> None:
    """Deploy on Ray Serve (``--ray``) and serve until interrupted; ``model`` is checked here first, so a model
    that cannot be found fails in one line instead of in every replica's log."""
    from sigma_studio.model.files import check_output_dir
    from sigma_studio.model.hub import HubOptions, resolve
    from sigma_studio.webui.ray_serve import deploy, describe

    check_output_dir(web.outputs, "--outputs")
    if serving.address is None:  # a cluster this command starts listens here (a running one, on its own nodes)
        check_address(host, port)
    if loader.model != "tiny":
        resolve(loader.model, HubOptions(loader.cache_dir, loader.token, loader.revision, loader.local_files_only))
    render.console.print(f"[dim]Deploying {loader.model} ({loader.mode}) on Ray Serve: {describe(serving)}…[/]")
    deploy(loader, serving, web, host=host, port=port, announce=lambda line: render.console.print(line))


def gpu_devices(gpus: str | None, mode: str, max_concurrency: int = 1) -> list[str | None]:
    """The device of each pipeline to load for ``--gpus`` (``[None]``: one pipeline, where the loader puts it).

    Checked before anything loads: every listed GPU must be visible, and the mode must hold a whole model on one
    device (``offload`` and ``multi-gpu`` spread one model over devices; ``cpu`` runs on none).
    """
    if gpus is None or not gpus.strip():
        return [None]
    if os.environ.get("SPACES_ZERO_GPU"):  # (before torch.cuda is asked anything: spaces must start CUDA)
        raise InputError("--gpus does not apply on ZeroGPU (it lends one GPU per generation); leave it out")
    spec = gpus.strip().lower()
    if spec.startswith("cpu:"):  # for tests: N pipelines on the CPU
        count = spec.removeprefix("cpu:")
        if not count.isdigit() or int(count) < 1:
            raise InputError(f"--gpus {gpus}: cpu:N takes a number of CPU pipelines, e.g. cpu:2")
        devices = ["cpu"] * int(count)
    else:
        devices = [f"cuda:{i}" for i in gpu_indices(gpus, spec)]
        if mode in ("offload", "multi-gpu", "cpu"):
            raise InputError(f"--gpus loads a whole model on each GPU; --mode {mode} does not: use auto, bf16, nf4 or "
                             "int8")  # fmt: skip
    if len(devices) > 1 and max_concurrency != 1:
        raise InputError(f"--max-concurrency is for one pipeline; with --gpus {gpus} the server runs one generation "
                         f"per pipeline ({len(devices)} at once)")  # fmt: skip
    return devices


def gpu_indices(gpus: str, spec: str) -> list[int]:
    """The CUDA indices of ``all`` or ``0,1,3``, each visible and named once."""
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec == "all":
        if not visible:
            raise InputError("--gpus all needs a CUDA GPU and none is visible; leave --gpus out to serve on the CPU")
        return list(range(visible))
    parts = [part.strip() for part in spec.split(",")]
    if not all(part.isdigit() for part in parts):
        raise InputError(f"--gpus {gpus} is not all or a list of GPU numbers such as 0,1,3")
    indices = [int(part) for part in parts]
    if len(set(indices)) < len(indices):
        raise InputError(f"--gpus {gpus} names a GPU twice; each GPU holds one pipeline")
    if not visible:
        raise InputError(f"--gpus {gpus} needs CUDA GPUs and none is visible; leave --gpus out to serve on the CPU")
    missing = [i for i in indices if i >= visible]
    if missing:
        raise InputError(f"--gpus {gpus}: there is no GPU {missing[0]} ({visible} visible: 0 to {visible - 1})")
    return indices


def load_pipelines(model: str, mode: str, devices: list[str | None], accel: str = "auto") -> list:
    """One pipeline per device (the same model and mode on each), loaded one after another."""
    from sigma_studio.model import LoaderConfig, load_pipeline

    pipes = []
    for k, device in enumerate(devices, start=1):
        where = f" on {device} ({k}/{len(devices)})" if len(devices) > 1 or device else ""
        with render.console.status(f"Loading {model} ({mode}){where}…", spinner="dots"):
            pipes.append(load_pipeline(LoaderConfig(model=model, mode=mode, device=device, accel=accel)))
        if k == 1 and device and device.startswith("cuda") and pipes[0].mode in ("offload", "multi-gpu"):
            raise InputError(f"{model} does not fit one GPU (--mode auto chose {pipes[0].mode}), and --gpus loads a "
                             "whole model on each: use --mode nf4, or leave --gpus out")  # fmt: skip
    return pipes


def serve(
    model: str, mode: str, host: str, port: int, *, share=False, max_concurrency=W.slots, outputs=W.outputs,
    keep_hours=W.keep_hours, gpus: str | None = None, limits: WebLimits | None = None, api_key: str | None = None,
):  # fmt: skip
    """Load the model once (once per GPU of ``gpus``) and serve the UI, its API and ``POST /api/v1/generate``
    (blocks until stopped)."""
    from sigma_studio.examples import ROOT as EXAMPLES
    from sigma_studio.model.errors import MissingDependencyError
    from sigma_studio.model.files import check_output_dir

    try:
        from sigma_studio.webui.blocks import CSS, build_demo
        from sigma_studio.webui.jobs import Jobs
        from sigma_studio.webui.server import launch
    except ImportError as exc:
        raise MissingDependencyError("gradio", "webui", f"The web UI ({exc.name} is missing)") from None
    devices = gpu_devices(gpus, mode, max_concurrency)
    check_output_dir(outputs, "--outputs")
    check_address(host, port)
    gpu_wrapper = None
    if os.environ.get("SPACES_ZERO_GPU"):  # ZeroGPU: import spaces before CUDA starts; hold a GPU only to generate
        import spaces

        from .zerogpu import gpu_wrapper as zero_gpu

        gpu_wrapper = zero_gpu(spaces)  # each call asks for the seconds its steps and references need
    # CUDA graphs are captured on the generating thread: several generations at once on one pipeline run eagerly
    pipes = load_pipelines(model, mode, devices, accel="auto" if max_concurrency == 1 else "none")
    pipe = pipes[0]  # the page's architecture and settings (every pooled pipeline shares them)
    # one queue for the page, the Gradio API and the REST route; with --gpus, one slot per pipeline
    jobs = Jobs(pipes=pipes) if len(pipes) > 1 else Jobs(max_concurrency)
    limits = limits or WebLimits()
    demo = build_demo(
        pipe, outputs=outputs, max_concurrency=max_concurrency, gpu_wrapper=gpu_wrapper, jobs=jobs,
        keep_hours=keep_hours, limits=limits,
    )  # fmt: skip
    try:  # quiet: Gradio's own banner speaks of launch()'s arguments, the line below of this command's
        launch(demo, pipe, outputs=outputs, jobs=jobs, limits=limits, host=host, port=port, share=share,
               allowed_paths=[EXAMPLES], css=CSS, api_key=api_key, quiet=True)  # fmt: skip
    except OSError as exc:  # the port was taken while the model loaded (Gradio's message names launch()'s arguments)
        if "port" not in str(exc).lower():
            raise
        raise SigmaError(f"port {port} on {host} was taken while the model loaded: pass --port N") from None
    render.console.print(
        f"SIGMA Studio ({pipe.name}) at [bold]{demo.local_url}[/]"
        + (f" and [bold]{demo.share_url}[/] (public)" if demo.share_url else "")
        + "  [dim]Ctrl-C stops it[/]"
    )
    demo.block_thread()
