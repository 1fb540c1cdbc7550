"""The built Space, run as Hugging Face runs it: ``sigma space build``, its requirements.txt installed into a fresh
virtualenv (nothing of this checkout in it), ``python app.py`` with the port from the environment, and one
generation from Debian's Chromium (Playwright).

Then the ZeroGPU folder's app.py, in that same virtualenv with a stand-in ``spaces`` package (SPACES_ZERO_GPU set;
the shapes model instead of SIGMA): each generation, from the page and from the named API, is wrapped in
``spaces.GPU`` asking for the seconds :func:`zerogpu.gpu_seconds` gives its steps and references.

Slow (it installs PyTorch and Gradio into a new virtualenv): ``pytest -m slow tests/test_space_run.py``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests import browser as ui
from tests.browser import ART, STATE_TIMEOUT_MS, _open
from tests.conftest import free_port

pytestmark = [pytest.mark.slow, ui.pytestmark]
browser = ui.browser  # the fixture: one Chromium for this module
INSTALL_TIMEOUT = 1800  # seconds for pip to install torch, Gradio and the rest (from its cache: about a minute)

FAKE_SPACES = '''"""A stand-in for ZeroGPU's `spaces`: GPU(duration=f) runs the function, logging f's answer."""
import functools, json, os


def GPU(task=None, *, duration=None, size=None):
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            seconds = duration(*args, **kwargs) if callable(duration) else duration
            with open(os.environ["FAKE_SPACES_LOG"], "a") as log:
                log.write(json.dumps({"function": fn.__name__, "seconds": seconds}) + "\\n")
            return fn(*args, **kwargs)
        return run
    return wrap if task is None else wrap(task)
'''


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """(the fresh virtualenv's python, the CPU Space folder, the ZeroGPU Space folder)."""
    from sigma_studio.cli.main import app

    root = tmp_path_factory.mktemp("space-run")
    for name, hardware in (("cpu", "cpu"), ("gpu", "zero-gpu")):
        result = CliRunner().invoke(app, ["space", "build", str(root / name), "--hardware", hardware])
        assert result.exit_code == 0, result.output
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    # PIP_RETRIES: where download.pytorch.org cannot be reached, pip skips that index at once (torch then comes
    # from the other indexes pip is configured with) instead of retrying it for every requirement
    env = {**clean_env(), "PIP_RETRIES": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    install = [str(python), "-m", "pip", "install", "-q", "-r", "requirements.txt"]
    done = subprocess.run(install, cwd=root / "cpu", env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    return python, root / "cpu", root / "gpu"


def clean_env() -> dict:
    """This environment without what would let the checkout's own install leak into the Space's."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP"}
    return {k: v for k, v in os.environ.items() if k not in drop}


@contextlib.contextmanager
def serve(python: Path, folder: Path, env: dict):
    """``python app.py`` in ``folder`` (the port is in ``env``) until it listens; yields its URL, then stops it."""
    port = int(env.get("PORT") or env["GRADIO_SERVER_PORT"])
    log = open(folder / "server.log", "w")  # noqa: SIM115 - open while the server runs
    full = {**clean_env(), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **env}
    proc = subprocess.Popen([str(python), "app.py"], cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=full)
    deadline = time.time() + 300
    try:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, (folder / "server.log").read_text()[-3000:]
                assert time.time() < deadline, f"no server within 300 s: {(folder / 'server.log').read_text()}"
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def generate_the_first_example(browser, url: str, outputs: Path, shot: str) -> Path:
    """Open the page, click the shapes world's first example (compose), Generate; the PNG written."""
    pg = _open(browser, url)
    assert "shapes world" in pg.locator("body").inner_text()
    pg.locator("#examples button.example").first.click()
    pg.wait_for_function(
        "document.querySelector('#prompt textarea').value.includes('colour of')", timeout=STATE_TIMEOUT_MS
    )
    pg.locator("#generate").click()
    pg.wait_for_function("document.querySelector('#info').innerText.includes('seed')", timeout=STATE_TIMEOUT_MS)
    pg.screenshot(path=str(ART / shot), full_page=True)
    assert "Error" not in pg.locator("#info").inner_text()
    (written,) = outputs.glob("sigma-*.png")
    pg.close()
    return written


def test_the_space_installs_in_a_fresh_virtualenv_and_generates_from_a_browser(space, browser):
    from PIL import Image

    from sigma_studio.model.shapes.evaluate import read

    python, folder, _ = space
    site = next((python.parent.parent / "lib").glob("python3*/site-packages"))
    assert not list(site.glob("sigma_studio*")) and not list(site.glob("__editable__*"))  # nothing installed
    probe = "import importlib.metadata as m, sigma_studio.cli.main as c; print(c.__file__, m.version('sigma-studio'))"
    where = subprocess.run([str(python), "-c", probe], cwd=folder, env=clean_env(), capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    module, version = where.stdout.split()
    assert module.startswith(str(folder / "sigma_studio")) and version == importlib.metadata.version("sigma-studio")

    with serve(python, folder, {"PORT": str(free_port())}) as url:  # the port from PORT, as on a Space
        written = generate_the_first_example(browser, url, folder / "outputs" / "webui", "space-cpu.png")
    assert read(Image.open(written)).colour == "blue"  # compose: the circle's colour (100 % in the world's eval)


def test_the_zero_gpu_app_asks_each_generation_for_its_seconds(space, browser, tmp_path):
    from gradio_client import Client, handle_file

    from sigma_studio.cli.zerogpu import gpu_seconds
    from sigma_studio.examples import ROOT as EXAMPLES
    from sigma_studio.model import read_record

    python, _, folder = space
    (tmp_path / "spaces.py").write_text(FAKE_SPACES)
    log = tmp_path / "gpu.jsonl"
    env = {"GRADIO_SERVER_PORT": str(free_port()), "SPACES_ZERO_GPU": "1", "PYTHONPATH": str(tmp_path),
           "FAKE_SPACES_LOG": str(log), "SIGMA_MODEL": "shapes", "SIGMA_MODE": "auto"}  # fmt: skip
    with serve(python, folder, env) as url:  # the port from GRADIO_SERVER_PORT
        written = generate_the_first_example(browser, url, folder / "outputs" / "webui", "space-zero-gpu.png")
        shapes = [handle_file(str(EXAMPLES / "shapes" / n)) for n in ("yellow-triangle.png", "blue-circle.png")]
        prompt = "Draw the <subject>shape <img1> in the <style>colour of <img2>."
        Client(url, verbose=False).predict(prompt, shapes, None, steps=3, seed=1, api_name="/generate")
    record = read_record(written)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [
        {"function": "generate", "seconds": gpu_seconds(record.config["steps"], len(record.reference_files()))},
        {"function": "_run", "seconds": gpu_seconds(3, 2)},
    ]
