"""``sigma serve --ray`` without a cluster: the placement arithmetic, the flags' refusals, and the replica's stream
(progress, refusals, a cancel that stops the generation) relayed by the ingress's RemotePipeline. The live cluster
is tests/test_serve_ray.py (marked ``ray``)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from sigma_studio.model.errors import InputError, SigmaError
from sigma_studio.webui.ray_serve import RayServing, first_line, parse_autoscale, placement
from sigma_studio.webui.remote import RemotePipeline, Replica


def test_placement_defaults_to_one_replica_per_gpu_or_one_on_cpus():
    gpu = placement(RayServing(), {"GPU": 4.0, "CPU": 64.0})
    assert gpu["num_replicas"] == 4 and gpu["ray_actor_options"] == {"num_gpus": 1.0, "num_cpus": 1.0}
    assert gpu["max_ongoing_requests"] == 1  # one generation per replica at a time: the rest wait in Ray's queue
    cpu = placement(RayServing(), {"CPU": 2.0})
    assert cpu["num_replicas"] == 1 and cpu["ray_actor_options"]["num_gpus"] == 0.0
    assert placement(RayServing(replicas=2), {"CPU": 2.0})["num_replicas"] == 2


def test_placement_autoscales_and_refuses_what_the_cluster_cannot_hold():
    auto = placement(RayServing(autoscale=(1, 8)), {"GPU": 8.0, "CPU": 8.0})
    assert auto["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 8, "target_ongoing_requests": 1}
    assert "num_replicas" not in auto
    with pytest.raises(InputError, match="holds 2"):
        placement(RayServing(replicas=3), {"GPU": 2.0, "CPU": 16.0})
    with pytest.raises(InputError, match="--replica-gpus 0"):
        placement(RayServing(replica_gpus=1), {"CPU": 4.0})
    with pytest.raises(InputError, match="holds 2"):
        placement(RayServing(replicas=3, replica_cpus=1), {"CPU": 2.0})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"replicas": 2, "autoscale": (1, 2)}, "give one of them"),
        ({"replicas": 0}, "at least one"),
        ({"autoscale": (3, 2)}, "MIN <= MAX"),
        ({"autoscale": (0, 0)}, "MAX >= 1"),
        ({"replica_cpus": -1}, "negative"),
    ],
)
def test_bad_placements_are_refused_in_one_line(kwargs, message):
    with pytest.raises(InputError, match=message):
        RayServing(**kwargs)


def test_autoscale_is_min_colon_max():
    assert parse_autoscale("1:4") == (1, 4) and parse_autoscale(None) is None
    for bad in ("4", "a:b", "1-4", ":3"):
        with pytest.raises(InputError, match="MIN:MAX"):
            parse_autoscale(bad)


def test_ray_options_without_ray_are_refused_and_ray_refuses_share():
    from sigma_studio.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--model", "shapes", "--replicas", "2"])
    assert result.exit_code == 2 and "options of --ray" in result.output
    result = CliRunner().invoke(app, ["serve", "--ray", "--model", "shapes", "--share"])
    assert result.exit_code == 2 and "leave out --share" in result.output
    result = CliRunner().invoke(app, ["serve", "--ray", "--autoscale", "x"])
    assert result.exit_code == 2 and "MIN:MAX" in result.output and "Traceback" not in result.output


def test_a_ray_error_is_reduced_to_its_cause():
    text = 'Deploying app failed:\nray::ServeReplica.__init__()\n  File "x.py", line 3\nInputError: no such model\n'
    assert first_line(RuntimeError(text)) == "InputError: no such model"


class LocalStream:
    """A stand-in for Ray's streaming response: the replica's async generator, stepped on its own event loop."""

    def __init__(self, agen):
        self.agen, self.loop, self.cancelled = agen, asyncio.new_event_loop(), False

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return self.loop.run_until_complete(self.agen.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def cancel(self):
        self.cancelled = True
        self.loop.run_until_complete(self.agen.aclose())


class LocalHandle:
    """``handle.options(stream=True).generate.remote(request)`` on a local :class:`Replica`."""

    def __init__(self, replica):
        self.replica, self.streams = replica, []

    def options(self, **_):
        return self

    @property
    def generate(self):
        return self

    def remote(self, request):
        self.streams.append(LocalStream(self.replica.generate(request)))
        return self.streams[-1]


@pytest.fixture(scope="module")
def replica():
    from sigma_studio.model import LoaderConfig

    return Replica(LoaderConfig(model="shapes"))


def test_the_replicas_result_and_progress_reach_the_ingress(replica):
    from sigma_studio.model import GenerationConfig, build_request

    about = replica.about()
    remote = RemotePipeline(LocalHandle(replica), about)
    assert (remote.name, remote.arch) == ("shapes", replica.pipe.arch)
    request = build_request("a red star", arch=remote.arch, config=GenerationConfig(steps=3, seed=5, size=(64, 64)))
    steps = []
    result = remote(request, progress=lambda i, n: steps.append((i, n)))
    direct = replica.pipe(request)
    assert np.array_equal(np.asarray(result.image), np.asarray(direct.image))  # the picture the pipeline makes
    assert result.record.to_json() == direct.record.to_json() and result.contexts == {}
    assert steps[-1] == (3, 3) and len(steps) >= 3
    assert remote.runs() == {"local": 1}


def test_a_refused_request_is_the_same_error_at_the_ingress(replica):
    from sigma_studio.model import GenerationConfig, build_request

    remote = RemotePipeline(LocalHandle(replica), replica.about())
    request = build_request("a red star", arch=remote.arch, config=GenerationConfig(steps=2, size=(64, 64)))
    original = replica.pipe
    replica.pipe = lambda *_a, **_k: (_ for _ in ()).throw(InputError("cfg_text must be at least 1"))
    try:
        with pytest.raises(InputError, match="cfg_text must be at least 1"):
            remote(request)
        replica.pipe = lambda *_a, **_k: (_ for _ in ()).throw(SigmaError("out of memory on the replica"))
        with pytest.raises(SigmaError, match="out of memory") as caught:
            remote(request)
        assert not isinstance(caught.value, InputError)
    finally:
        replica.pipe = original


def test_a_cancel_at_the_ingress_stops_the_replicas_generation(replica):
    from sigma_studio.model import GenerationConfig, build_request

    handle = LocalHandle(replica)
    remote = RemotePipeline(handle, replica.about())
    request = build_request("a red star", arch=remote.arch, config=GenerationConfig(steps=400, size=(64, 64)))
    stopped, real = threading.Event(), replica.pipe

    def watched(req, progress):
        try:
            return real(req, progress=progress)
        except Exception:
            stopped.set()  # the generation ended early: the replica's stop flag reached its next step
            raise

    class Cancel(Exception):
        """What the web server's progress callback raises for a job's cancel."""

    def progress(i, n):
        if i == 2:
            raise Cancel  # what a job's cancel does in the web server's progress callback

    replica.pipe = watched
    try:
        with pytest.raises(Cancel):
            remote(request, progress=progress)
    finally:
        replica.pipe = real
    assert handle.streams[-1].cancelled
    assert stopped.wait(120), "the replica's generation kept running after the cancel"


class Gone(Exception):
    """Stands in for Ray's RayActorError in a test without a cluster."""


class DyingHandle(LocalHandle):
    """The first ``deaths`` calls die after one step, as a killed replica's stream does; later ones generate."""

    def __init__(self, replica, deaths: int):
        super().__init__(replica)
        self.deaths, self.calls = deaths, 0

    def remote(self, request):
        self.calls += 1
        return DeadStream() if self.calls <= self.deaths else super().remote(request)


class DeadStream:
    def __iter__(self):
        yield ("step", 1, 4)
        raise Gone("The actor died unexpectedly before finishing this task")

    def cancel(self):
        """Nothing to stop: the replica behind this stream is already dead."""


def test_a_replica_that_dies_is_retried_then_fails_in_one_line(monkeypatch, replica):
    from sigma_studio.model import GenerationConfig, build_request
    from sigma_studio.webui import remote as remote_module
    from sigma_studio.webui.remote import ReplicaStopped

    monkeypatch.setattr(remote_module, "retryable", lambda: (Gone,))
    config = GenerationConfig(steps=2, seed=1, size=(64, 64))
    request = build_request("a red star", arch=replica.pipe.arch, config=config)
    handle = DyingHandle(replica, deaths=1)
    assert RemotePipeline(handle, replica.about(), retries=1)(request).seed == 1  # the retry made the picture
    assert handle.calls == 2
    handle = DyingHandle(replica, deaths=5)
    with pytest.raises(ReplicaStopped, match=r"stopped \(Gone\), and so did its 1 retry") as caught:
        RemotePipeline(handle, replica.about(), retries=1)(request)
    assert handle.calls == 2 and "\n" not in str(caught.value)


def test_without_ray_installed_the_command_says_what_to_install(monkeypatch, tmp_path):
    import sys

    from sigma_studio.cli.main import app

    monkeypatch.setitem(sys.modules, "ray", None)  # as on the default install, which does not pull Ray
    result = CliRunner().invoke(app, ["serve", "--ray", "--model", "shapes", "--outputs", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "pip install 'sigma-studio[serve]'" in " ".join(result.output.split()) and "Traceback" not in result.output
