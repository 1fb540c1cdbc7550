"""``sigma space build``: the folder's card, requirements, app.py and the package it carries; ZeroGPU's duration.

Fast (a wheel build of the checkout, a few seconds). The folder installed into a fresh virtualenv and run as a
Space, in a browser, is tests/test_space_run.py (slow).
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sigma_studio.cli import zerogpu
from sigma_studio.cli.main import app
from sigma_studio.cli.space_build import copy_installed
from sigma_studio.cli.zerogpu import MAX_SECONDS, call_seconds, gpu_seconds
from sigma_studio.model.config import GenerationConfig

gradio = pytest.importorskip("gradio")


def run(*args: str):
    """(exit code, non-empty output lines) of ``sigma ARGS``."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, [line for line in result.output.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The CPU and the ZeroGPU Space, each built once for the module."""
    root = tmp_path_factory.mktemp("spaces")
    for name, hardware in (("cpu", "cpu"), ("gpu", "zero-gpu")):
        code, lines = run("space", "build", root / name, "--hardware", hardware)
        assert code == 0, lines
    return root


def front_matter(folder: Path) -> dict:
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def requirement_lines(folder: Path) -> list[str]:
    lines = (folder / "requirements.txt").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def test_the_cpu_space_has_a_card_requirements_an_app_and_the_package(built):
    folder = built / "cpu"
    meta = front_matter(folder)
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__ and meta["app_file"] == "app.py"
    assert meta["suggested_hardware"] == "cpu-basic" and meta["title"] == "SIGMA Studio"
    assert meta["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert len(meta["short_description"]) <= 60 and "models" not in meta
    body = (folder / "README.md").read_text().split("---\n", 2)[2]
    assert "shapes-world model" in body and "**Limits**" in body and "It is not SIGMA" in body

    lines = requirement_lines(folder)
    assert lines[0] == "--extra-index-url https://download.pytorch.org/whl/cpu"  # before torch, for every line
    torch_version = importlib.metadata.version("torch").split("+")[0]
    assert f"torch=={torch_version}" in lines and f"gradio=={gradio.__version__}" in lines
    assert {"transformers>=4.49", "huggingface_hub>=0.24", "opencv-python-headless>=4.8"} <= set(lines)
    assert not [line for line in lines if "sigma" in line or "spaces" == line or ";" in line]

    source = (folder / "app.py").read_text()
    compile(source, "app.py", "exec")
    assert "import spaces" not in source and '"shapes"' in source
    assert 'os.environ.get("PORT")' in source and '"0.0.0.0"' in source

    # the package, as installed: its modules, the shipped model, the examples, and its version
    assert (folder / "sigma_studio" / "cli" / "zerogpu.py").is_file()
    assert (folder / "sigma_studio" / "model" / "shapes" / "weights" / "ema.safetensors").is_file()
    assert list((folder / "sigma_studio" / "examples" / "shapes").glob("*.png"))
    (info,) = folder.glob("sigma_studio-*.dist-info")
    assert importlib.metadata.PathDistribution(info).version == importlib.metadata.version("sigma-studio")
    assert not list(folder.rglob("__pycache__")) and not (folder / "sigma_studio" / "__init__.py").exists()


def test_the_zero_gpu_space_serves_sigma_and_imports_spaces_only_on_zerogpu(built):
    folder = built / "gpu"
    meta = front_matter(folder)
    assert meta["suggested_hardware"] == "zero-a10g" and "ByteDance-Seed/BAGEL-7B-MoT" in meta["models"]
    assert len(meta["short_description"]) <= 60
    body = (folder / "README.md").read_text()
    assert f"{gpu_seconds(GenerationConfig().steps, 2)} s for one image" in body and f"{MAX_SECONDS} s" in body
    lines = requirement_lines(folder)
    assert "spaces" in lines and not any("download.pytorch.org" in line for line in lines)
    assert any(line.startswith("torch==") for line in lines)

    source = (folder / "app.py").read_text()
    tree = ast.parse(source)
    guarded = [node for node in tree.body if isinstance(node, ast.If) and "SPACES_ZERO_GPU" in ast.unparse(node.test)]
    assert len(guarded) == 1 and "import spaces" in ast.unparse(guarded[0])  # imported under that test only
    top_level_imports = [ast.unparse(n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert not any("spaces" in line for line in top_level_imports)
    assert '"sigma"' in source and '"bf16"' in source


def test_a_folder_in_use_is_replaced_only_with_overwrite(tmp_path):
    out = tmp_path / "space"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    code, lines = run("space", "build", out)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "--overwrite" in lines[0]
    assert (out / "mine.txt").read_text() == "keep"
    code, lines = run("space", "build", out, "--overwrite", "--title", "Shapes")
    assert code == 0, lines
    assert not (out / "mine.txt").exists() and front_matter(out)["title"] == "Shapes"


def test_an_unknown_hardware_is_one_line(tmp_path):
    code, lines = run("space", "build", tmp_path / "x", "--hardware", "a100")
    assert code == 2 and lines == ["error: --hardware a100 is not one of cpu, zero-gpu"]
    assert not (tmp_path / "x").exists()


def test_an_installed_package_is_carried_from_its_record(tmp_path):
    """Without a checkout, the installed files (the RECORD of the distribution) are copied, and nothing else."""
    site = tmp_path / "site"
    (site / "sigma_studio" / "model" / "__pycache__").mkdir(parents=True)
    (site / "sigma_studio" / "model" / "__init__.py").write_text("X = 1\n")
    (site / "sigma_studio" / "model" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"")
    info = site / "sigma_studio-9.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sigma-studio\nVersion: 9.9\n")
    (site / "other.py").write_text("")
    record = ["sigma_studio/model/__init__.py,,", "sigma_studio/model/__pycache__/__init__.cpython-311.pyc,,",
              "sigma_studio-9.9.dist-info/METADATA,,", "sigma_studio-9.9.dist-info/RECORD,,", "other.py,,",
              "../../../bin/sigma,,"]  # fmt: skip
    (info / "RECORD").write_text("\n".join(record) + "\n")
    out = tmp_path / "out"
    copy_installed(out, importlib.metadata.PathDistribution(info))
    copied = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert copied == ["sigma_studio-9.9.dist-info/METADATA", "sigma_studio-9.9.dist-info/RECORD",
                      "sigma_studio/model/__init__.py"]  # fmt: skip


# -- ZeroGPU: the seconds asked for each generation ------------------------------------------------------------------
def test_gpu_seconds_grow_with_steps_references_and_images_up_to_zerogpus_limit():
    one = gpu_seconds(50, 2)
    expected = zerogpu.START_SECONDS + 50 * zerogpu.SLICE_FACTOR * (0.24 + 0.075 * 2) + 5 + 2 * 2
    assert one == int(-(-expected // 1)) == 78  # rounded up
    assert gpu_seconds(51, 2) > one and gpu_seconds(50, 3) > one and gpu_seconds(50, 2, 2) > one
    assert gpu_seconds(50, 0) < one and gpu_seconds(2, 0) > zerogpu.START_SECONDS
    assert gpu_seconds(200, 6, 4) == MAX_SECONDS == 300


def page_call(steps, count, images):
    """The arguments of the page's generate (webui/events.py): state, text, history, token, layout, settings."""
    from dataclasses import fields

    from sigma_studio.webui.page import Settings
    from sigma_studio.webui.state import Slot, UIState

    state = UIState("a <img1> and <img2>", tuple(Slot(image=i) for i in images))
    settings = {f.name: None for f in fields(Settings)} | {"steps": float(steps), "count": float(count)}
    layout = ["none", None, [], 100, 200, 0]
    return (state, state.prompt, [], "token", *layout, *settings.values())


def test_call_seconds_reads_the_page_call_and_the_api_call():
    assert call_seconds(*page_call(30, 2, ["a.png", "b.png", None])) == gpu_seconds(30, 2, 2)
    assert call_seconds(*page_call(12, 1, [None]), progress=object()) == gpu_seconds(12, 0, 1)

    from sigma_studio.model.request.build import GenerationRequest

    request = GenerationRequest("p", (), (object(), object(), object()), GenerationConfig(steps=20))
    assert call_seconds("token", request, 3) == gpu_seconds(20, 3, 3)
    assert call_seconds("token", request, count=2) == gpu_seconds(20, 3, 2)


def test_a_call_of_another_shape_asks_for_the_most(caplog):
    assert call_seconds("something", 1) == MAX_SECONDS
    assert "cannot read steps and references" in caplog.text


def test_the_web_ui_wraps_generations_with_the_computed_duration():
    class Spaces:
        @staticmethod
        def GPU(duration):  # noqa: N802 - spaces' own name
            return ("GPU", duration)

    assert zerogpu.gpu_wrapper(Spaces) == ("GPU", call_seconds)
