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


def result(k: int) -> str:
    """A result's name as the server writes them (webui/guard.py OUTPUT_NAME)."""
    return f"sigma-20261207-101010-{k}-{k:08x}.png"


def test_a_sweep_deletes_the_servers_old_files_and_leftovers_and_nothing_else(tmp_path):
    old, new = aged(tmp_path / result(1), 30), aged(tmp_path / result(2), 1)
    old_mask, new_mask = (
        aged(tmp_path / UPLOADS / "mask-0123456789ab.png", 30),
        aged(tmp_path / UPLOADS / "mask-ba9876543210.png", 1),
    )
    downscaled = aged(tmp_path / UPLOADS / "holiday-0badcafe.png", 30)
    leftover = aged(tmp_path / f".{result(3)}.k2j3h.tmp", STALE_HOURS + 1)
    writing = aged(tmp_path / f".{result(4)}.a8d7f.tmp", 0)
    theirs = [aged(tmp_path / "holiday.png", 100), aged(tmp_path / ".draft.tmp", 100), aged(tmp_path / "x.txt", 100)]
    assert Retention(tmp_path, keep_hours=24).sweep() == 4
    assert not any(p.exists() for p in (old, old_mask, downscaled, leftover))
    assert all(p.exists() for p in (new, new_mask, writing, *theirs))  # a shared folder keeps what is not ours


def test_keep_hours_zero_keeps_every_result_but_not_the_leftovers(tmp_path):
    old = aged(tmp_path / result(1), 1000)
    leftover = aged(tmp_path / UPLOADS / ".mask-0123456789ab.png.q1.tmp", STALE_HOURS + 1)
    assert Retention(tmp_path, keep_hours=0).sweep() == 1
    assert old.exists() and not leftover.exists()


def test_a_sweep_that_cannot_read_a_folder_deletes_nothing_and_raises_nothing(tmp_path, monkeypatch):
    old = aged(tmp_path / result(1), 30)

    def unreadable(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "iterdir", unreadable)
    assert Retention(tmp_path).sweep() == 0 and old.exists()


def test_sweeps_as_jobs_start_come_at_most_every_few_seconds(tmp_path):
    jobs = Jobs(1, retention=Retention(tmp_path, keep_hours=24, every_s=HOUR))
    jobs.retention.sweep(force=True)  # as the server starts
    old = aged(tmp_path / result(1), 30)
    with jobs.slot(jobs.submit()) as pooled:  # within every_s of the last sweep: the folder is not listed again
        assert pooled is None and old.exists()  # (no pool: the job runs on the caller's pipeline)
    jobs.retention.every_s = 0
    with jobs.slot(jobs.submit()) as pooled:  # the sweep comes as the job reaches its slot, before its body
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

    planted = aged(tmp_path / result(1), 30)
    with live_server(tiny_pipe, tmp_path) as (url, jobs, _demo):
        assert not planted.exists()  # swept as the server started
        old, mask = aged(tmp_path / result(2), 30), aged(tmp_path / UPLOADS / "mask-0123456789ab.png", 30)
        jobs.retention.every_s = 0  # (the next sweep is due at once, not in a minute)
        body = {"prompt": "a red circle", "steps": 2, "size": "64x64", "seed": 3}
        reply = httpx.post(url + "/api/v1/generate", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        assert not old.exists() and not mask.exists()
        assert len(reply.json()["images"]) == len(list(tmp_path.glob("sigma-*.png"))) == 1  # the call's own result
