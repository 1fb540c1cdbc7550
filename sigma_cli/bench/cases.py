"""The benchmark's cases and ``run_case``, which times one of them.

Cases (spec: PERF_NOTES.md):
  (a) text-to-image 1024x1024, 50 steps, text guidance 4.0 on (0.4, 1]
  (b) SIGMA compositional: three 1024x1024 references interleaved with text, 50 steps, text 4.0 + image 2.0
      guidance on (0, 1], renorm text_channel, released layout (three real guidance contexts)
For each: seconds per image and per denoising step, peak GPU memory, FLOPs counted for the run, and the fraction
of the hardware limit (FLOPs / measured dense matmul rate of the same device).

Also the prompt of the mid-model suites (two references, SIGMA's layout).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from PIL import Image

from sigma_studio.model.config import GenerationConfig
from sigma_studio.model.request.build import build_request
from sigma_studio.model.run.pipeline import SigmaPipeline

from .flops import evaluated_branches, matmul_rate, step_flops, sync

PROMPT_A = "A photorealistic red fox sitting in fresh snow at sunrise, soft light, shallow depth of field"
TEXTS_B = ["Place <id>the man", "next to <subject>the dog", "in the style of <style>this painting", "at dusk."]
SCALES = {"full": ("bagel-7b-mot", 1024, 50), "toy": ("tiny", 128, 6)}  # the device check's (preset, px, steps)


def bench_device() -> torch.device:
    """The device the device check measures: the first GPU, else the CPU (its toy run)."""
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


PROMPT_MID = "Place <id>the man <img1> next to <subject>the dog <img2> in a park"  # with two references


@dataclass
class CaseResult:
    mode: str
    case: str
    seconds: float
    seconds_per_step: float
    outside_loop_seconds: float  # prefill, VAE encode and decode, image conversion
    peak_gib: float
    tflop: float
    fraction_of_peak: float
    context_tokens: list[int]


def sigma_inputs(size: int) -> list:
    """Case (b)'s interleaved inputs: the texts and three plain ``size`` x ``size`` references."""
    refs = [Image.new("RGB", (size, size), c) for c in ("red", "green", "blue")]
    return [TEXTS_B[0], refs[0], TEXTS_B[1], refs[1], TEXTS_B[2], refs[2], TEXTS_B[3]]


def two_references(size: int) -> list[Image.Image]:
    """The two plain references of ``PROMPT_MID``."""
    return [Image.new("RGB", (size, size), c) for c in ("red", "blue")]


def case_inputs(case: str, size: int, steps: int) -> tuple[dict, GenerationConfig]:
    """The pipeline's keyword inputs and the config of case ``a`` or ``b``."""
    if case == "a":
        kw = dict(prompt=PROMPT_A, images=None)
        cfg = GenerationConfig(steps=steps, cfg_text_scale=4.0, cfg_img_scale=1.0, cfg_interval=(0.4, 1.0),
                               cfg_renorm_type="global", size=(size, size), seed=0, layout="released")  # fmt: skip
        return kw, cfg
    cfg = GenerationConfig(
        steps=steps, cfg_text_scale=4.0, cfg_img_scale=2.0, cfg_interval=(0.0, 1.0),
        cfg_renorm_type="text_channel", size=(size, size), seed=0, layout="released",
    )  # fmt: skip
    return dict(inputs=sigma_inputs(size)), cfg


def run_case(
    pipe: SigmaPipeline, case: str, size: int, steps: int, warmup: int, every: int = 1, forecast: int = 1
) -> CaseResult:
    """One timed generation of case ``a`` or ``b``, after ``warmup`` untimed steps (0: none); ``every`` > 1
    evaluates the guidance branches every that many steps (``--speed fast``), ``forecast`` > 1 the network
    (``--forecast-every``)."""
    device = pipe.device
    arch = pipe.arch
    kw, cfg = case_inputs(case, size, steps)
    cfg = cfg.replace(guidance_every=every, forecast_every=forecast)
    if warmup:
        pipe(**kw, config=cfg.replace(steps=warmup))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    marks: list[float] = []
    sync(device)
    start = time.perf_counter()
    request = build_request(**kw, arch=arch, config=cfg)

    def mark(i: int, n: int) -> None:
        if i < n:  # denoising steps only: the last call comes after decoding
            sync(device)
            marks.append(time.perf_counter())

    result = pipe._generate(request, progress=mark, keep_contexts=True)
    sync(device)
    total = time.perf_counter() - start
    n_lat = (size // arch.pixels_per_token) ** 2
    unique = {id(c): c.plan.length for c in result.contexts.values()}
    flops = sum(
        step_flops(arch, n_lat, list({id(c): c.plan.length for c in (result.contexts[b] for b in branches)}.values()))
        for branches in evaluated_branches(cfg)
    )
    loop = marks[-1] - (marks[0] - (marks[1] - marks[0])) if len(marks) > 1 else total
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    rate = matmul_rate(device)
    return CaseResult(pipe.mode, case, total, loop / len(marks), total - loop, peak, flops / 1e12,
                      flops / loop / rate, sorted(unique.values(), reverse=True))  # fmt: skip
