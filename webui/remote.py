"""A pipeline that runs elsewhere: what the web server holds when Ray Serve replicas generate (``sigma serve --ray``).

The page, the named API, the REST route and the OpenAI routes all take a pipeline. On Ray Serve the one ingress holds
a :class:`RemotePipeline` instead: it has the served model's name, mode and architecture (asked of a replica once,
so the ingress loads no weights), and a call sends the request to a free replica (Ray's router picks it), streams
the replica's denoising steps back as progress, and returns the replica's result. So every route keeps its queue,
its cancel (the stream is cancelled and the replica stops at its next step) and its one record per output.

A replica that dies mid-run (its process killed, its node lost) is retried on another, ``retries`` times; after that
the call fails with one line. It never hangs: a dead replica's stream ends with an error, not silence.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections import Counter

from sigma_studio.model.errors import InputError, SigmaError

log = logging.getLogger(__name__)


class ReplicaStopped(SigmaError):
    """The replica running a generation stopped (and the retries did too)."""


def retryable() -> tuple[type[BaseException], ...]:
    """Ray's errors for a replica that is gone, as opposed to one that refused the request (none without Ray: a
    stand-in handle in a test)."""
    try:
        from ray.exceptions import NodeDiedError, RayActorError, WorkerCrashedError
        from ray.serve.exceptions import ReplicaUnavailableError
    except ImportError:
        return ()

    return RayActorError, WorkerCrashedError, NodeDiedError, ReplicaUnavailableError


class RemotePipeline:
    """The ingress's stand-in for a pipeline: ``name``, ``mode``, ``arch`` and ``__call__`` as the web server uses
    them. ``device`` is the ingress's own (the CPU): a job's images go one by one, each to a free replica."""

    device = "cpu"

    def __init__(self, handle, about: dict, retries: int = 1):
        self.handle, self.retries = handle, retries
        self.name, self.mode, self.arch = about["name"], about["mode"], about["arch"]
        self.replica_device = about["device"]
        self._runs: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, request, progress=None):
        """Generate ``request`` on a replica; ``progress(step, steps)`` as on a local pipeline (it may raise, e.g.
        the job's cancel: the replica is then told to stop)."""
        for attempt in range(self.retries + 1):
            try:
                return self._once(request, progress)
            except retryable() as exc:
                reason = type(exc).__name__
                if attempt == self.retries:
                    raise ReplicaStopped(
                        f"The replica generating this stopped ({reason}), and so did its {self.retries} retry: "
                        "try again when the cluster has recovered"
                    ) from None
                log.warning("a replica stopped mid-generation (%s); retrying on another", reason)
        raise AssertionError("unreachable")

    def _once(self, request, progress):
        stream = self.handle.options(stream=True).generate.remote(request)
        try:
            for kind, *payload in stream:
                if kind == "step":
                    if progress is not None:
                        progress(*payload)
                elif kind == "error":
                    refused, message = payload
                    raise (InputError if refused else SigmaError)(message)
                else:  # "done"
                    result, replica = payload
                    with self._lock:
                        self._runs[replica] += 1
                    return result
        except BaseException:
            stream.cancel()  # (a no-op on a finished or dead stream) the replica stops at its next step
            raise
        raise ReplicaStopped("The replica ended the generation without a result: try again")

    def runs(self) -> dict[str, int]:
        """Generations each replica has finished for this server, by replica id."""
        with self._lock:
            return dict(self._runs)


class _Stop(Exception):
    """Raised in the generating thread at its next step once the caller has gone."""


class Replica:
    """One loaded pipeline, generating one request at a time (a Ray Serve deployment's replica class)."""

    def __init__(self, loader):
        from sigma_studio.model import load_pipeline

        self.pipe = load_pipeline(loader)
        self.id = _replica_id()

    def about(self) -> dict:
        """What the ingress needs to draw the page and build requests: no weights."""
        return {"name": self.pipe.name, "mode": self.pipe.mode, "arch": self.pipe.arch,
                "device": str(getattr(self.pipe, "device", "cpu"))}  # fmt: skip

    async def generate(self, request):
        """Stream ``("step", i, n)`` per denoising step, then ``("done", result, replica id)``, or ``("error",
        refused, message)`` for a request the pipeline refused. Cancelled (the caller left), it stops its work."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def progress(i: int, n: int) -> None:
            if stop.is_set():
                raise _Stop
            loop.call_soon_threadsafe(events.put_nowait, ("step", i, n))

        work = loop.run_in_executor(None, lambda: self.pipe(request, progress=progress))
        try:
            while not work.done() or not events.empty():
                get = asyncio.ensure_future(events.get())
                await asyncio.wait({get, work}, return_when=asyncio.FIRST_COMPLETED)
                if get.done():
                    yield get.result()
                else:
                    get.cancel()
            try:
                result = work.result()
            except SigmaError as exc:
                yield ("error", isinstance(exc, InputError), str(exc))
                return
            yield ("done", light(result), self.id)
        finally:
            stop.set()  # the stream was cancelled or ended: a generation still running stops at its next step


def light(result):
    """``result`` without what only the replica can use (its KV caches and guidance plans)."""
    return dataclasses.replace(result, contexts={}, plans=None)


def _replica_id() -> str:
    try:
        from ray import serve

        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # noqa: BLE001 - outside a replica (a unit test): one local name
        return "local"
