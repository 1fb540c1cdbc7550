"""What the web server keeps on disk: results and uploads for ``keep_hours``, the leftovers of writes cut short for
a few hours, and a sweep as generations start through any door, the REST route's included (webui/retention.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sigma_studio.webui.jobs import Jobs
from sigma_studio.webui.retention import INCOMING, STALE_HOURS, UPLOADS, Retention, clean_incoming

HOUR = 3600.0


def aged(path: Path, hours: float, *, folder: bool = False) -> Path:
    """``path`` created (a file, or a folder), last modified ``hours`` ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir() if folder else path.write_bytes(b"x")
    stamp = time.time() - hours * HOUR
    os.utime(path, (stamp, stamp))
    return path


def test_a_sweep_deletes_results_and_uploads_past_keep_hours_and_leftovers_past_a_few_hours(tmp_path):
    old, new = aged(tmp_path / "sigma-old.png", 30), aged(tmp_path / "sigma-new.png", 1)
    old_mask, new_mask = aged(tmp_path / UPLOADS / "mask-a.png", 30), aged(tmp_path / UPLOADS / "mask-b.png", 1)
    leftover, writing = aged(tmp_path / ".sigma-x.png.abc.tmp", STALE_HOURS + 1), aged(tmp_path / ".y.png.d.tmp", 0)
    other = aged(tmp_path / "notes.txt", 100)  # not the server's: never touched
    assert Retention(tmp_path, keep_hours=24).sweep() == 3
    assert not old.exists() and not old_mask.exists() and not leftover.exists()
    assert new.exists() and new_mask.exists() and writing.exists() and other.exists()


def test_keep_hours_zero_keeps_every_result_but_not_the_leftovers(tmp_path):
    old, leftover = aged(tmp_path / "sigma-old.png", 1000), aged(tmp_path / UPLOADS / ".m.png.q.tmp", STALE_HOURS + 1)
    assert Retention(tmp_path, keep_hours=0).sweep() == 1
    assert old.exists() and not leftover.exists()


def test_sweeps_as_jobs_start_come_at_most_every_few_seconds(tmp_path):
    jobs = Jobs(1, retention=Retention(tmp_path, keep_hours=24, every_s=HOUR))
    jobs.retention.sweep(force=True)  # as the server starts
    old = aged(tmp_path / "sigma-old.png", 30)
    with jobs.slot(jobs.submit()):  # within every_s of the last sweep: the folder is not listed again
        pass
    assert old.exists()
    jobs.retention.every_s = 0
    with jobs.slot(jobs.submit()):
        pass
    assert not old.exists()


def test_incoming_folders_go_when_their_process_is_gone_or_they_are_stale(tmp_path):
    incoming = tmp_path / INCOMING
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = aged(incoming / f"rest-{gone.stdout.strip()}-abc", 0, folder=True)  # its process has exited
    live = aged(incoming / f"rest-{os.getpid()}-def", 0, folder=True)  # a call of this server, running
    stale = aged(incoming / f"rest-{os.getpid()}-ghi", STALE_HOURS + 1, folder=True)  # cut short, never removed
    assert clean_incoming(incoming) == 1 and not dead.exists() and stale.exists()  # as the REST route mounts
    assert clean_incoming(incoming, STALE_HOURS) == 1 and not stale.exists() and live.exists()


def test_a_server_that_only_answers_rest_calls_still_deletes_old_results(tmp_path, tiny_pipe):
    pytest.importorskip("gradio")
    import httpx

    from tests.conftest import live_server

    planted = aged(tmp_path / "sigma-before.png", 30)
    with live_server(tiny_pipe, tmp_path) as (url, jobs, _demo):
        assert not planted.exists()  # swept as the server started
        old, mask = aged(tmp_path / "sigma-old.png", 30), aged(tmp_path / UPLOADS / "mask-old.png", 30)
        jobs.retention.every_s = 0  # (the next sweep is due at once, not in a minute)
        body = {"prompt": "a red circle", "steps": 2, "size": "64x64", "seed": 3}
        reply = httpx.post(url + "/api/v1/generate", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        assert not old.exists() and not mask.exists()
        assert len(reply.json()["images"]) == len(list(tmp_path.glob("sigma-*.png"))) == 1  # the call's own result
