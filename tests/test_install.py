"""The installed package, as a user gets it: a fresh virtualenv, ``pip install <checkout>``, then the commands run
from a folder that is not the checkout and holds a ``model.py`` (which must not shadow anything).

Slow (it installs PyTorch into a new virtualenv): ``pytest -m slow tests/test_install.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "-q"]
    import torch

    subprocess.run([*pip, f"torch=={torch.__version__.split('+')[0]}"], check=True)
    subprocess.run([*pip, f"{REPO}[webui]"], check=True)
    return root / "bin"


@pytest.fixture
def elsewhere(tmp_path):
    (tmp_path / "model.py").write_text('raise SystemExit("a local model.py shadowed the package")\n')
    (tmp_path / "webui.py").write_text('raise SystemExit("a local webui.py shadowed the package")\n')
    return tmp_path


def _run(venv, cwd, *args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{venv}:{os.environ['PATH']}")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_nothing_generic_is_installed_and_generate_runs(venv, elsewhere):
    site = next((venv.parent / "lib").glob("python3*/site-packages"))
    assert not {"model", "webui", "finetune", "bench", "sigma_cli"} & {p.name for p in site.iterdir()}
    shapes = next(site.glob("sigma_studio/examples/shapes"))
    prompt = "Draw the <subject>shape <img1> in the <style>colour of <img2>."
    args = [prompt, str(shapes / "yellow-triangle.png"), str(shapes / "blue-circle.png"), "--model", "shapes"]
    result = _run(venv, elsewhere, "sigma", "generate", *args, "--out", "o.png", "--seed", "0")
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "o.png").is_file()


def test_sigma_webui_serves_the_page(venv, elsewhere):
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{venv}:{os.environ['PATH']}")
    proc = subprocess.Popen(
        ["sigma", "webui", "--model", "shapes", "--port", str(port)], cwd=elsewhere, env=env, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(1)
        else:
            pytest.fail("sigma webui did not serve the page within 120 s")
        assert "<html" in page
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_documented_torchrun_line_starts(venv, elsewhere):
    made = _run(venv, elsewhere, "sigma", "shapes", "make", "--out", "data", "--rows", "20", "--eval-rows", "2")
    assert made.returncode == 0, made.stderr
    line = ["torchrun", "--nproc-per-node", "1", "-m", "sigma_studio.cli", "finetune", "--model", "tiny"]
    result = _run(venv, elsewhere, *line, "--dataset", "data/train", "--steps", "2", "--out", "run", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (elsewhere / "run" / "latest").is_file()
