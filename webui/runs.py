"""Running a job's images in a queue slot: on the slot's pipeline and GPU, one after another or together."""

from __future__ import annotations

import contextlib
import secrets
import time
import uuid
from pathlib import Path

import torch

from .jobs import Cancelled, Jobs


@contextlib.contextmanager
def on_device(pipe):
    """``pipe`` with its GPU as the thread's current CUDA device (kernels that read it run on that pipeline's GPU)."""
    device = torch.device(getattr(pipe, "device", "cpu"))
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        yield pipe


def batches(runner, count: int) -> bool:
    """Whether a job's ``count`` images run together (``generate_batch``: one forward per step for all of them).
    On a GPU that fills it better (1.83x the images per minute at four on the H200's mid-model run); on a CPU it
    does not help (docs/PERF.md), so there they run one after another and a cancel keeps the finished ones."""
    device = torch.device(getattr(runner, "device", "cpu"))
    return count > 1 and device.type == "cuda" and callable(getattr(runner, "generate_batch", None))


def run_request(pipe, request, outputs: Path, *, count=1, jobs: Jobs | None = None, token=None, progress=None):
    """Generate ``count`` images of one request (seeds s, s+1, ...) in one queue slot; each PNG carries its record.

    The images are made by the pipeline the slot holds when ``jobs`` pools one per GPU, else by ``pipe``.
    ``progress(done, total, seconds_left)`` counts steps over all images; a cancelled job raises ``Cancelled``.
    """
    jobs = jobs or Jobs()
    made: list[tuple[str, dict, int]] = []  # (PNG, record, seed) of each image, as it is written
    start = time.perf_counter()

    def step(k: int, i: int) -> None:
        jobs.check(token)
        if progress is not None:
            done, total = k * request.config.steps + i, count * request.config.steps
            progress(done, total, (time.perf_counter() - start) / done * (total - done) if done else None)

    def save(result) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = result.save(outputs / f"sigma-{stamp}-{result.seed}-{uuid.uuid4().hex[:8]}.png")
        made.append((str(path), result.record.to_json(), result.seed))

    try:
        with jobs.slot(token) as pooled, on_device(pooled if pooled is not None else pipe) as runner:
            if batches(runner, count):  # the images share each step's forward; done all together
                first = request.config.seed if request.config.seed is not None else secrets.randbelow(2**31)
                seeded = [request.replace(config=request.config.replace(seed=first + k)) for k in range(count)]
                for result in runner.generate_batch(seeded, progress=lambda i, n: step(0, i * count)):
                    save(result)
            for k in range(len(made), count):
                seed = request.config.seed if request.config.seed is None else request.config.seed + k
                seed = made[0][2] + k if k and seed is None else seed
                job = request.replace(config=request.config.replace(seed=seed))
                result = runner(job, progress=lambda i, n, k=k: step(k, i))
                save(result)
    except Cancelled as exc:
        exc.kept = [(path, record) for path, record, _ in made]  # the images finished before the cancel
        raise
    paths, records, seeds = (list(column) for column in zip(*made, strict=True))
    return paths, records, seeds, result
