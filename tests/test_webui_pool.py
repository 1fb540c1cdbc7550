"""Serving with one pipeline per GPU (``sigma webui --gpus``), on the CPU: a pool of two tiny pipelines.

The pool's slots (two held at once, a third waits, a waiting job is cancelled), the page's handler on a pooled
pipeline, ``--gpus`` refused before anything loads, and a server started by ``serve(gpus="cpu:2")``: eight Gradio
clients at once each get their own seed's image, the REST route joins the same pool, and both pipelines do work.
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import pytest

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

import gradio as gr  # noqa: E402
import httpx  # noqa: E402  (a gradio dependency)
from gradio_client import Client, handle_file  # noqa: E402

from sigma_studio.cli.main import main  # noqa: E402
from sigma_studio.cli.webui import gpu_devices  # noqa: E402
from sigma_studio.examples import IMAGES  # noqa: E402
from sigma_studio.model.errors import InputError  # noqa: E402
from sigma_studio.model.request.record import read_record  # noqa: E402
from sigma_studio.webui import handlers as h  # noqa: E402
from sigma_studio.webui import jobs as jobs_module  # noqa: E402
from sigma_studio.webui.jobs import Cancelled, Jobs  # noqa: E402
from sigma_studio.webui.state import Slot, UIState  # noqa: E402
from tests.conftest import free_port  # noqa: E402

FAST = dict(steps=2, size="64x64")


class Counted:
    """A pipeline that counts its generations and how many of the pool's run at once. With ``meet`` armed (a
    ``threading.Barrier(2)`` in the shared dict), the next two calls wait for each other (a barrier, not a sleep),
    so two slots that can run at once are seen to, on a CPU however busy; a pool that ran one job at a time would
    break the barrier after its timeout."""

    def __init__(self, pipe, overlap: dict):
        self.pipe, self.overlap, self.calls = pipe, overlap, 0

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, *args, **kwargs):
        with self.overlap["lock"]:
            self.calls += 1
            self.overlap["now"] += 1
            self.overlap["peak"] = max(self.overlap["peak"], self.overlap["now"])
        meet = self.overlap["meet"]
        try:
            if meet is not None:
                try:
                    meet.wait(timeout=120)
                except threading.BrokenBarrierError:
                    pass  # the pool ran this call alone: the test's peak then says so
                self.overlap["meet"] = None
            return self.pipe(*args, **kwargs)
        finally:
            with self.overlap["lock"]:
                self.overlap["now"] -= 1


def counted(pipes) -> list[Counted]:
    overlap = {"lock": threading.Lock(), "now": 0, "peak": 0, "meet": None}  # meet: a Barrier a test arms
    return [Counted(p, overlap) for p in pipes]


# -- the pool ---------------------------------------------------------------------------------------------------------
def test_two_slots_hold_at_once_a_third_waits_and_is_cancelled():
    a, b = object(), object()
    jobs = Jobs(5, pipes=[a, b])  # a pool sets the concurrency: one slot per pipeline
    assert jobs.concurrency == 2
    outcome: list = []
    token = jobs.submit()

    def third() -> None:
        try:
            with jobs.slot(token) as pipe:
                outcome.append(pipe)
        except Cancelled:
            outcome.append("cancelled")

    with jobs.slot(None) as first, jobs.slot(None) as second:
        assert {id(first), id(second)} == {id(a), id(b)}  # both pipelines held at once
        waiting = threading.Thread(target=third)
        waiting.start()
        waiting.join(timeout=0.5)
        assert waiting.is_alive() and not outcome  # no free pipeline: it waits
        assert jobs.cancel(token)
        waiting.join(timeout=5)
    assert outcome == ["cancelled"] and jobs.runs == [1, 1]  # it never ran
    with jobs.slot(None) as pipe:  # both slots came back
        assert pipe in (a, b)
    assert not jobs.cancel(token)  # the cancelled job is forgotten


def test_without_a_pool_the_slot_holds_no_pipeline():
    jobs = Jobs(2)
    with jobs.slot(None) as one, jobs.slot(None) as two:
        assert one is None and two is None


def test_the_page_generates_on_the_pooled_pipeline(tiny_pipe, tmp_path):
    pooled = counted([tiny_pipe])
    st = UIState("a cat <img1>", (Slot(str(IMAGES / "cat.jpg")),))
    settings = dict(preset="custom", width=64, height=64, steps=2, cfg_text=4.0, cfg_img=2.0, cfg_low=0.0,
                    cfg_high=1.0, renorm="global", shift=3.0, seed=11, count=2, group_mask=True)  # fmt: skip
    lay = h.LayoutInputs("none", None, 100, 200, 0, None, None, [])
    result = h.generate(tiny_pipe, st, lay, settings, tmp_path, jobs=Jobs(pipes=pooled))
    assert result.seeds == [11, 12] and pooled[0].calls == 2


# -- --gpus, refused before loading -----------------------------------------------------------------------------------
def sigma(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    return exit_.value.code, capsys.readouterr().err


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a pipeline was loaded")

    monkeypatch.setattr("sigma_studio.model.load_pipeline", refuse)


def test_gpus_without_cuda_exits_2_before_loading(capsys, monkeypatch, no_loading, tmp_path):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    code, err = sigma(capsys, "webui", "--model", "tiny", "--gpus", "0", "--outputs", tmp_path / "out")
    assert code == 2 and "--gpus 0 needs CUDA GPUs and none is visible" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("gpus", "mode", "concurrency", "message"),
    [
        ("0,2", "auto", 1, "there is no GPU 2 (2 visible: 0 to 1)"),
        ("0,0", "auto", 1, "names a GPU twice"),
        ("first", "auto", 1, "is not all or a list of GPU numbers"),
        ("all", "offload", 1, "--mode offload does not"),
        ("0,1", "multi-gpu", 1, "--mode multi-gpu does not"),
        ("all", "auto", 3, "--max-concurrency is for one pipeline"),
        ("cpu:0", "auto", 1, "cpu:N takes a number of CPU pipelines"),
    ],
)
def test_bad_gpus_are_refused(monkeypatch, gpus, mode, concurrency, message):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gpu_devices(gpus, mode, concurrency)


def test_gpus_are_refused_on_zerogpu(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    monkeypatch.setattr("torch.cuda.is_available", lambda: pytest.fail("CUDA was asked before spaces started it"))
    with pytest.raises(InputError, match="--gpus does not apply on ZeroGPU"):
        gpu_devices("0", "auto")


def test_gpus_name_the_devices(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 4)
    assert gpu_devices("all", "auto") == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert gpu_devices(" 0, 1,3 ", "nf4") == ["cuda:0", "cuda:1", "cuda:3"]
    assert gpu_devices("2", "bf16", 4) == ["cuda:2"]  # one pipeline: --max-concurrency applies as without --gpus
    assert gpu_devices(None, "auto") == [None] and gpu_devices("cpu:2", "auto") == ["cpu", "cpu"]


# -- a served pool of two ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pool_server(tmp_path_factory):
    """(url, outputs, the server's Jobs) of ``serve(gpus="cpu:2")``: two tiny pipelines, each counted."""
    from sigma_studio.cli.webui import serve

    out, made, demos = tmp_path_factory.mktemp("webui-pool"), [], []

    class Recorded(Jobs):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    port = free_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jobs_module, "Jobs", Recorded)
        mp.setattr(gr.Blocks, "block_thread", lambda self: demos.append(self))  # serve returns once it serves
        serve("tiny", "auto", "127.0.0.1", port, outputs=str(out), keep_hours=0, gpus="cpu:2")
    jobs = made[0]
    assert jobs.concurrency == 2 and len(jobs.pipes) == 2 and jobs.pipes[0] is not jobs.pipes[1]
    jobs.pipes = tuple(counted(jobs.pipes))
    yield f"http://127.0.0.1:{port}/", out, jobs
    demos[0].close()


def test_eight_clients_share_two_pipelines(pool_server):
    url, out, jobs = pool_server
    jobs.pipes[0].overlap["meet"] = threading.Barrier(2)  # this test's first two generations wait for each other
    results: dict[int, tuple] = {}

    def call(seed: int) -> None:
        c = Client(url, verbose=False)
        try:
            image = [handle_file(str(IMAGES / "cat.jpg"))]
            results[seed] = c.predict("a cat <img1>", image, seed=seed, **FAST, api_name="/generate")
        finally:
            c.close()

    threads = [threading.Thread(target=call, args=(2000 + k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == [2000 + k for k in range(8)]
    for seed, (images, records) in results.items():
        assert records[0]["config"]["seed"] == seed
        assert read_record(images[0]).config["seed"] == seed  # the file this client got is its own
        assert len(list(out.glob(f"sigma-*-{seed}-*.png"))) == 1
    assert len({Path(images[0]).name for images, _ in results.values()}) == 8
    calls = [p.calls for p in jobs.pipes]
    assert sum(calls) == 8 and min(calls) >= 1, calls  # both pipelines generated
    assert jobs.pipes[0].overlap["peak"] == 2  # two at once, never more


def test_rest_runs_on_the_pool(pool_server):
    url, _, jobs = pool_server
    before = sum(p.calls for p in jobs.pipes)
    cat = base64.b64encode((IMAGES / "cat.jpg").read_bytes()).decode()
    body = {"prompt": "a cat <img1>", "images": [cat], "seed": 2100, "steps": 2, "size": "64x64"}
    reply = httpx.post(url + "api/v1/generate", json=body, timeout=60)
    assert reply.status_code == 200 and reply.json()["records"][0]["config"]["seed"] == 2100
    assert sum(p.calls for p in jobs.pipes) == before + 1
