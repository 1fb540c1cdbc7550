"""The text files of a built Space: its card (``README.md``), ``app.py`` and ``requirements.txt``."""

from __future__ import annotations

import importlib.metadata
import json
import sys
from dataclasses import dataclass

from sigma_studio.model.config import GenerationConfig
from sigma_studio.model.hub import BACKBONE_REPO, SIGMA_REPOS

from .zerogpu import MAX_SECONDS, gpu_seconds

TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
DEFAULT_HARDWARE = "cpu"  # `sigma space build`'s: the shipped shapes model, offline, on free hardware
DEFAULT_TITLE = "SIGMA Studio"  # the Space's title on its card


@dataclass(frozen=True)
class Hardware:
    """What a Space of this kind serves and how."""

    model: str  # SIGMA_MODEL unless the Space sets it
    mode: str  # SIGMA_MODE unless the Space sets it
    suggested: str  # the card's suggested_hardware (and the hardware asked for when `sigma space deploy` creates it)
    label: str


HARDWARE = {
    "cpu": Hardware("shapes", "auto", "cpu-basic", "CPU"),
    "zero-gpu": Hardware("sigma", "bf16", "zero-a10g", "ZeroGPU"),
}


def requirements(requires: list[str], hardware: str, version: str, sdk_version: str) -> str:
    """requirements.txt: the package's dependencies and its web UI's (``requires``: its Requires-Dist lines), with
    PyTorch from its CPU index on CPU hardware, torch pinned to the version the build ran with, Gradio to the card's."""
    from packaging.requirements import Requirement

    lines = [
        f"# sigma-studio {version} on {HARDWARE[hardware].label} hardware, written by `sigma space build`.",
        "# The package itself is in this folder (sigma_studio/); these are what it needs to run the web UI.",
    ]
    if hardware == "cpu":
        lines += ["# PyTorch's CPU wheels: without this index pip installs the CUDA build (gigabytes of GPU code)",
                  f"--extra-index-url {TORCH_CPU_INDEX}"]  # fmt: skip
    for text in requires:
        req = Requirement(text)
        if req.marker is not None and "extra" in str(req.marker):
            if not req.marker.evaluate({"extra": "webui"}):
                continue
            req.marker = None
        if req.name == "gradio":
            req.specifier = type(req.specifier)(f"=={sdk_version}")
        elif req.name == "torch":
            req.specifier = type(req.specifier)(_torch_pin() or str(req.specifier))
        lines.append(str(req))
    if hardware == "zero-gpu":
        lines += ["# ZeroGPU provides `spaces` itself; named so that a run elsewhere has it (it does nothing there)",
                  "spaces"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _torch_pin() -> str | None:
    """``==X.Y.Z`` of the torch installed here, without its local label (``==2.13.0`` also takes ``2.13.0+cpu``)."""
    try:
        return "==" + importlib.metadata.version("torch").split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        return None


APP = '''"""SIGMA Studio as a Hugging Face Space ({label}), written by `sigma space build` from sigma-studio {version}.

`python app.py` (what the Space runs) serves the web UI through `sigma webui` on 0.0.0.0, on the port in PORT or
GRADIO_SERVER_PORT (`sigma webui`'s own default without either). The package is in this folder (sigma_studio/ and
its .dist-info), so nothing but requirements.txt is installed. Space variables override the model and mode:
SIGMA_MODEL, SIGMA_MODE; a secret SIGMA_API_KEY requires `Authorization: Bearer KEY` on the REST and OpenAI
routes. Arguments of `sigma webui` may follow: `python app.py --model tiny`.
"""

import os
import sys

os.environ.setdefault("SIGMA_MODEL", "{model}")
os.environ.setdefault("SIGMA_MODE", "{mode}")
{zero_gpu}
from sigma_studio.cli.main import main  # noqa: E402  (the copy beside this file: sys.path[0])

if __name__ == "__main__":
    port = os.environ.get("PORT")  # a Space's; without it `sigma webui` reads GRADIO_SERVER_PORT, then its default
    main(["webui", "--host", "0.0.0.0", *(["--port", port] if port else []), *sys.argv[1:]])
'''

ZERO_GPU_IMPORT = """
if os.environ.get("SPACES_ZERO_GPU"):  # on ZeroGPU hardware only: `spaces` must come before anything starts CUDA
    import spaces  # noqa: F401  (the web UI then wraps each generation in spaces.GPU, sigma_studio/cli/zerogpu.py)
"""


def app_source(hardware: str, version: str) -> str:
    hw = HARDWARE[hardware]
    zero_gpu = ZERO_GPU_IMPORT if hardware == "zero-gpu" else ""
    return APP.format(label=hw.label, version=version, model=hw.model, mode=hw.mode, zero_gpu=zero_gpu)


def card(hardware: str, version: str, sdk_version: str, *, title: str = DEFAULT_TITLE) -> str:
    """README.md: the Space's configuration (YAML front matter) and what it does and cannot do."""
    hw = HARDWARE[hardware]
    meta = {
        "title": title, "emoji": "🎨", "colorFrom": "indigo", "colorTo": "pink", "sdk": "gradio",
        "sdk_version": sdk_version, "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
        "app_file": "app.py", "suggested_hardware": hw.suggested, "pinned": False, "license": "apache-2.0",
        "short_description": SHORT[hardware], "tags": ["image-generation", "multi-reference", "sigma", "bagel"],
    }  # fmt: skip
    if hardware == "zero-gpu":
        meta |= {"models": [BACKBONE_REPO, SIGMA_REPOS[0]], "startup_duration_timeout": "1h"}
    front = "\n".join(_yaml(key, value) for key, value in meta.items())
    body = (CPU_BODY if hardware == "cpu" else ZERO_GPU_BODY).format(version=version, **_figures())
    return f"---\n{front}\n---\n\n# {title}\n\n{INTRO}{body}"


def _yaml(key: str, value) -> str:
    """One front-matter entry; strings as JSON strings (valid YAML), lists as YAML lists."""
    if isinstance(value, list):
        return f"{key}:\n" + "\n".join(f"  - {json.dumps(v, ensure_ascii=False)}" for v in value)
    return f"{key}: {json.dumps(value, ensure_ascii=False)}"


def _figures() -> dict:
    steps = GenerationConfig().steps
    return {"steps": steps, "default_s": gpu_seconds(steps, 2), "four_s": gpu_seconds(steps, 2, 4),
            "max_s": MAX_SECONDS}  # fmt: skip


SHORT = {  # (the hub takes at most 60 characters)
    "cpu": "Multi-reference image generation: shapes model on CPU",
    "zero-gpu": "SIGMA multi-reference image generation on ZeroGPU",
}

INTRO = """SIGMA Studio's web UI for interleaved multi-reference image generation: the prompt places reference images
(`<img1>`, `<img2>`, ...) and attribute tokens say what each one gives (`<id>`, `<subject>`, `<style>`, ...); layout
tabs add a Canny edge map, a depth map, boxes, 3-D boxes or masks. Every result PNG carries its record and replays
with `sigma generate --from`. The same server answers `gradio_client` (`/generate`, `/preview`), a REST route
(`POST /api/v1/generate`) and OpenAI-compatible image routes.
"""

CPU_BODY = """
**This Space runs the shapes-world model**, which ships inside the package (under 10 MB, nothing to download): a
SIGMA model of the real architecture at toy size (3.5 M parameters), trained on 64 px pictures of six shapes in
eight colours. It composes (the shape of one reference in the colour of another), selects, places in a box and
keeps a background, in well under a second a picture on the free CPU. The page offers the world's five examples.

**Limits**

- It is not SIGMA. SIGMA (BAGEL-7B-MoT, 14 B parameters) needs a GPU: build the ZeroGPU Space with
  `sigma space build OUT --hardware zero-gpu`, or set the Space variable `SIGMA_MODEL` on GPU hardware.
- It knows its world only (64 px shapes and colours, docs/SHAPES.md), and not perfectly: a held-out colour can
  come out wrong, and an object placed in a box can be a blob. Photographs are beyond it.
- One generation runs at a time (the others wait in the queue). Results and uploads are deleted after 24 h, and
  with the Space's disk whenever it restarts.

Built by `sigma space build` from sigma-studio {version}; `sigma space deploy` uploads it.
"""

ZERO_GPU_BODY = """
**This Space runs SIGMA** (a finetune of BAGEL-7B-MoT) in bf16 on ZeroGPU: a GPU is lent to each generation and
given back when it ends. Each generation asks for the seconds its request needs, from its steps, references and
images (`sigma_studio/cli/zerogpu.py`): {default_s} s for one image of {steps} steps with two references, {four_s} s for
four, never more than {max_s} s (ZeroGPU's limit). Visitors' ZeroGPU quota is charged the time used.

**Limits**

- The first start downloads the weights (about 30 GB: SIGMA's, with BAGEL's configs and autoencoder) and may take
  many minutes; a restart downloads them again.
- A request that would need more than {max_s} s (many steps, references and images at once) is cut off at {max_s} s;
  use fewer steps or images per run.
- One generation runs at a time (the others wait in the queue). Stop may not interrupt a generation that already
  holds the GPU. Results and uploads are deleted after 24 h, and with the Space's disk whenever it restarts.
- A gated or private model needs a secret `HF_TOKEN`; `SIGMA_MODEL` and `SIGMA_MODE` (default `bf16`) are Space
  variables.

Built by `sigma space build --hardware zero-gpu` from sigma-studio {version}; `sigma space deploy` uploads it.
"""
