"""``sigma bench --suite device``: the one script to run when a GPU is lent, each part with a hard timeout.

Parts, each in its own process (a hang or a crash costs that part only) and each writing JSON:

1. ``gpu-tests``: the ``gpu``-marked tests;
2. ``bf16``: the pipeline in bfloat16 against a float32 reference on the device (tiny and mid models);
3. ``quant``: nf4 and int8 through bitsandbytes against bf16 (mid model), with peak memory;
4. ``cases``: case (a) text-to-image and case (b) SIGMA three references, bf16, with the cuDNN attention backend
   forced, and with flash-attn where it is installed;
5. ``memory``: peak memory of nf4, and of offload under a 10 GiB budget.

``--scale full`` is the 7B configuration at 1024 px and 50 steps (a GPU); ``--scale toy`` runs the same code paths
on the tiny model at 128 px and 6 steps, so the script itself is tested on any CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image

PARTS = ("gpu-tests", "bf16", "quant", "cases", "memory")
TIMEOUTS = {"gpu-tests": 150, "bf16": 60, "quant": 90, "cases": 150, "memory": 120}  # seconds: 9.5 min at most
SCALES = {"full": ("bagel-7b-mot", 1024, 50), "toy": ("tiny", 128, 6)}


def device_suite(out_dir: Path, scale: str) -> dict:
    """Run every part in a subprocess with its timeout; collect the JSON each wrote, or why it did not."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"scale": scale, "device": _device_name(), "parts": {}}
    for part in PARTS:
        start = time.perf_counter()
        path = out_dir / f"{part}.json"
        cmd = [sys.executable, "-m", "sigma_studio.cli.bench_device", part, str(path), scale]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUTS[part])
            status = "ok" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
        except subprocess.TimeoutExpired:
            status = f"timed out after {TIMEOUTS[part]} s"
        result = json.loads(path.read_text()) if path.is_file() else None
        report["parts"][part] = {"status": status, "seconds": round(time.perf_counter() - start, 1), "result": result}
    (out_dir / "device.json").write_text(json.dumps(report, indent=1))
    return report


def _device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no CUDA device)"


def _device() -> torch.device:
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def _gpu_tests(scale: str) -> dict:
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests"], cwd=repo,
                          capture_output=True, text=True)  # fmt: skip
    return {"returncode": done.returncode, "summary": done.stdout.strip().splitlines()[-1:]}


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / a.float().norm())


def _bf16(scale: str) -> dict:
    import copy

    from sigma_studio.model import GenerationConfig, build_request

    from .bench import build_pipeline
    from .bench_layouts import PROMPT, mid

    dev, out = _device(), {}
    for name, arch in (("mid", mid()),):
        fp32 = build_pipeline(arch, "cpu", torch.device("cpu"), None)
        fp32.model, fp32._device = fp32.model.to(dev), dev
        fp32.vae = fp32.vae.to(dev)
        bf16 = copy.copy(fp32)
        bf16.model = copy.deepcopy(fp32.model).to(torch.bfloat16)
        refs = [Image.new("RGB", (256, 256), c) for c in ("red", "blue")]
        request = build_request(PROMPT, refs, arch=arch, config=GenerationConfig(steps=6, seed=3))
        out[name] = _relative_error(fp32(request).latents, bf16(request).latents)
    return {"relative_error": out, "device": str(dev)}


def _quant(scale: str) -> dict:
    from .bench import build_pipeline
    from .bench_layouts import mid

    dev, out = _device(), {}
    if dev.type != "cuda":
        return {"skipped": "bitsandbytes' 4/8-bit kernels are measured on CUDA; the CPU path is tested elsewhere"}
    arch = mid()
    ref = build_pipeline(arch, "bf16", dev, None)
    from sigma_studio.model import GenerationConfig, build_request

    from .bench_layouts import PROMPT

    refs = [Image.new("RGB", (256, 256), c) for c in ("red", "blue")]
    request = build_request(PROMPT, refs, arch=arch, config=GenerationConfig(steps=6, seed=3))
    base = ref(request).latents
    for mode in ("nf4", "int8"):
        torch.cuda.reset_peak_memory_stats(dev)
        pipe = build_pipeline(arch, mode, dev, None)
        out[mode] = {"relative_error_vs_bf16": _relative_error(base, pipe(request).latents),
                     "peak_gib": torch.cuda.max_memory_allocated(dev) / 2**30}  # fmt: skip
    return out


def _cases(scale: str) -> dict:
    from .bench import benchmark

    preset, size, steps = SCALES[scale]
    dev = _device()
    mode = "bf16" if dev.type == "cuda" else "cpu"
    out = {}
    backends = [("default", None)]
    if dev.type == "cuda":
        from torch.nn.attention import SDPBackend

        backends.append(("cudnn", SDPBackend.CUDNN_ATTENTION))
    for name, backend in backends:
        path = Path(f"/tmp/sigma-device-cases-{name}.json")
        if backend is None:
            report = benchmark(preset, [mode], str(dev), size, steps, path, None)
        else:
            from torch.nn.attention import sdpa_kernel

            with sdpa_kernel([backend]):
                report = benchmark(preset, [mode], str(dev), size, steps, path, None)
        out[name] = report
    try:
        import flash_attn  # noqa: F401

        out["flash_attn"] = "installed: used by the unmasked query attention in the runs above"
    except ImportError:
        out["flash_attn"] = "not installed"
    return out


def _memory(scale: str) -> dict:
    from .bench import benchmark

    preset, size, steps = SCALES[scale]
    dev = _device()
    modes = ["nf4", "offload"] if dev.type == "cuda" else ["offload"]
    report = benchmark(preset, modes, str(dev), size, min(steps, 10), Path("/tmp/sigma-device-memory.json"), "10GiB")
    return {r["mode"] + "/" + r["case"]: r["peak_gib"] for r in report["results"]} | {"errors": report["errors"]}


RUNNERS = {"gpu-tests": _gpu_tests, "bf16": _bf16, "quant": _quant, "cases": _cases, "memory": _memory}

if __name__ == "__main__":  # one part: python -m sigma_studio.cli.bench_device PART OUT.json SCALE
    part, path, scale_name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    path.write_text(json.dumps(RUNNERS[part](scale_name), indent=1, default=str))
