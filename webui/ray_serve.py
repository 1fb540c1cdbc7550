"""``sigma serve --ray``: the web server as a Ray Serve application, from one machine to a cluster.

Two deployments:

- ``SigmaReplica``: one loaded pipeline per replica, one generation at a time, one GPU each (``num_gpus=1``; none on
  a cluster without GPUs). The count is fixed (``--replicas``) or autoscaled (``--autoscale MIN:MAX``, one
  request in flight per replica as the target).
- ``SigmaIngress``: one replica, no GPU, no weights. It serves everything a one-process ``sigma webui`` serves: the
  page, its named API, ``POST /api/v1/generate`` and the OpenAI-compatible routes, through the same queue, limits and
  key; each generation goes to a replica through :class:`webui.remote.RemotePipeline`.

Ray is the optional extra ``.[serve]``; nothing here is imported by the default install.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from dataclasses import dataclass

from sigma_studio.model.config import LoaderConfig
from sigma_studio.model.errors import InputError, MissingDependencyError, SigmaError

from .limits import WebSettings
from .remote import RemotePipeline, Replica

APP_NAME = "sigma"


@dataclass(frozen=True)
class RayServing:
    """How the replicas are placed. Defaults: one replica per GPU of the cluster, or one on a cluster without."""

    address: str | None = None  # a running cluster (e.g. auto, or ray://head:10001); None: RAY_ADDRESS, else local
    replicas: int | None = None  # a fixed count
    autoscale: tuple[int, int] | None = None  # (min, max) replicas, scaled on the requests in flight
    replica_gpus: float | None = None  # GPUs per replica (default 1 when the cluster has GPUs, else 0)
    replica_cpus: float = 1.0
    retries: int = 1  # a generation whose replica dies is sent again this many times

    def __post_init__(self) -> None:
        if self.replicas is not None and self.autoscale is not None:
            raise InputError("--replicas fixes the count and --autoscale varies it: give one of them")
        if self.replicas is not None and self.replicas < 1:
            raise InputError(f"--replicas {self.replicas}: serve at least one replica")
        if (
            self.autoscale is not None
            and not 0 <= self.autoscale[0] <= self.autoscale[1]
            or (self.autoscale is not None and self.autoscale[1] < 1)
        ):
            raise InputError(f"--autoscale {self.autoscale[0]}:{self.autoscale[1]} needs 0 <= MIN <= MAX and MAX >= 1")
        if self.replica_cpus < 0 or (self.replica_gpus is not None and self.replica_gpus < 0):
            raise InputError("--replica-cpus and --replica-gpus cannot be negative")


def parse_autoscale(text: str | None) -> tuple[int, int] | None:
    """``"1:4"`` as (1, 4)."""
    if text is None:
        return None
    low, sep, high = text.partition(":")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise InputError(f"--autoscale {text!r} is not MIN:MAX, e.g. 1:4")
    return int(low), int(high)


class Ingress:
    """The one ingress replica: builds the page and the routes around a :class:`RemotePipeline`."""

    async def __init__(self, replicas, web: WebSettings):
        self.web = web
        about = await replicas.about.remote()
        self.pipe = RemotePipeline(replicas, about, retries=web.retries)

    def __serve_build_asgi_app__(self):
        from sigma_studio.examples import ROOT as EXAMPLES

        from .blocks import CSS, build_demo
        from .jobs import Jobs
        from .server import asgi_app

        web, jobs = self.web, Jobs(self.web.slots)
        demo = build_demo(self.pipe, outputs=web.outputs, max_concurrency=web.slots, jobs=jobs,
                          keep_hours=web.keep_hours, limits=web.limits)  # fmt: skip
        return asgi_app(demo, self.pipe, outputs=web.outputs, jobs=jobs, limits=web.limits, css=CSS,
                        allowed_paths=[EXAMPLES], api_key=web.api_key, max_queue=web.max_queue)  # fmt: skip


def placement(serving: RayServing, cluster: dict) -> dict:
    """The replica deployment's options on a cluster with ``cluster`` resources (``ray.cluster_resources()``)."""
    gpus, cpus = cluster.get("GPU", 0.0), cluster.get("CPU", 0.0)
    per_gpu = serving.replica_gpus if serving.replica_gpus is not None else (1.0 if gpus else 0.0)
    if per_gpu > gpus:
        raise InputError(f"--replica-gpus {per_gpu:g}: the cluster has {gpus:g} GPUs; use --replica-gpus 0 to serve "
                         "on CPUs")  # fmt: skip
    options = {"ray_actor_options": {"num_gpus": per_gpu, "num_cpus": serving.replica_cpus}, "max_ongoing_requests": 1}
    if serving.autoscale is not None:
        low, high = serving.autoscale
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high, "target_ongoing_requests": 1}
        return options
    count = serving.replicas or (int(gpus // per_gpu) if per_gpu else 1)
    fits = min(gpus // per_gpu if per_gpu else count, cpus // serving.replica_cpus if serving.replica_cpus else count)
    if count > fits:
        raise InputError(f"--replicas {count}: the cluster holds {int(fits)} (each takes {per_gpu:g} GPU and "
                         f"{serving.replica_cpus:g} CPU; it has {gpus:g} GPUs and {cpus:g} CPUs)")  # fmt: skip
    options["num_replicas"] = count
    return options


def application(loader: LoaderConfig, serving: RayServing, web: WebSettings, cluster: dict):
    """The Ray Serve application: the replicas bound into the ingress."""
    from ray import serve

    options = placement(serving, cluster)
    slots = options.get("num_replicas") or options["autoscaling_config"]["max_replicas"]
    web = dataclasses.replace(web, slots=slots, retries=serving.retries)
    replicas = serve.deployment(Replica, name="SigmaReplica", **options)
    ingress = serve.deployment(serve.ingress()(Ingress), name="SigmaIngress", num_replicas=1,
                               ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)  # fmt: skip
    return ingress.bind(replicas.bind(loader), web)


def deploy(loader: LoaderConfig, serving: RayServing, web: WebSettings, *, host: str, port: int, announce=print):
    """Start (or join) the Ray cluster, deploy, announce the URL, and serve until interrupted; a cluster this call
    started is stopped on the way out."""
    try:
        import ray
        from ray import serve
    except ImportError:
        raise MissingDependencyError("ray[serve]", "serve", "sigma serve --ray") from None
    context = ray.init(address=serving.address, include_dashboard=False, log_to_driver=False,
                       configure_logging=False)  # fmt: skip
    started_here = serving.address is None and context.address_info.get("gcs_address") is not None
    try:
        announce(f"Ray cluster at {context.address_info['gcs_address']}")
        serve.start(http_options={"host": host, "port": port})
        try:
            serve.run(application(loader, serving, web, ray.cluster_resources()), name=APP_NAME, route_prefix="/")
        except SigmaError:
            raise
        except Exception as exc:  # noqa: BLE001 - Ray's deploy failure carries a replica's traceback
            raise SigmaError(f"Ray Serve could not start the replicas: {first_line(exc)}") from None
        announce(f"Serving {loader.model} on Ray at http://{host}:{port}")
        wait_for_interrupt()
    finally:
        serve.shutdown()
        if started_here:
            ray.shutdown()


def first_line(exc: BaseException) -> str:
    """The first meaningful line of a Ray error (its text embeds the remote traceback)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "Error:" in line and not line.startswith("File ")]
    return (errors[-1] if errors else lines[0] if lines else type(exc).__name__)[:300]


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM (both end as Ctrl-C does: the deployment shut down in a few seconds)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):  # the way out, not an error
        threading.Event().wait()


def describe(serving: RayServing) -> str:
    """One line on the placement, for the terminal."""
    if serving.autoscale:
        return f"{serving.autoscale[0]} to {serving.autoscale[1]} replicas"
    return f"{serving.replicas} replicas" if serving.replicas else "one replica per GPU (one without GPUs)"
