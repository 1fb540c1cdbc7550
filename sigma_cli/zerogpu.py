"""ZeroGPU: how long one generation holds the GPU that a Hugging Face ZeroGPU Space lends it.

``spaces.GPU(duration=call_seconds)`` calls :func:`call_seconds` with the wrapped function's own arguments before
each call; it returns the seconds to ask for, from the steps, the references and the images of that request
(:func:`gpu_seconds`). A visitor's quota is checked against the request and only the time used is charged, so
asking for too much only makes visitors wait; asking for too little cuts the generation off.
"""

from __future__ import annotations

import logging
import math

from sigma_studio.model.config import GenerationConfig

log = logging.getLogger(__name__)

# docs/PERF.md, NVIDIA H200, 1024 px, bf16, exact speed: 0.238 s a step without references, 0.459 s with three
STEP_SECONDS = 0.24
REFERENCE_STEP_SECONDS = 0.075  # what each reference (or control image) adds to one step
SLICE_FACTOR = 2.0  # a ZeroGPU workload gets a slice of an H200 (70 GB): count on half its speed
IMAGE_SECONDS = 5.0  # per image: the prefill of the guidance contexts and the autoencoder's decode
REFERENCE_SECONDS = 2.0  # per image and reference: its ViT and autoencoder encodings
START_SECONDS = 30.0  # a cold worker first moves the weights (about 30 GB) onto the lent GPU
MAX_SECONDS = 300  # the longest a ZeroGPU Space may ask for at once (5 minutes)


def gpu_seconds(steps: int, references: int, count: int = 1) -> int:
    """Seconds of GPU to ask for: ``count`` images of ``steps`` steps with ``references`` reference images,
    rounded up and capped at :data:`MAX_SECONDS` (ZeroGPU refuses more)."""
    steps, references, count = max(int(steps), 1), max(int(references), 0), max(int(count), 1)
    per_step = SLICE_FACTOR * (STEP_SECONDS + REFERENCE_STEP_SECONDS * references)
    per_image = steps * per_step + IMAGE_SECONDS + REFERENCE_SECONDS * references
    return min(MAX_SECONDS, math.ceil(START_SECONDS + count * per_image))


def call_seconds(*args, **kwargs) -> int:
    """:func:`gpu_seconds` of one call of a generate function that the web UI wraps in ``spaces.GPU``.

    Two are wrapped: the page's ``generate(state, text, history, token, *layout, *settings)`` (settings last, in
    the order of ``webui.page.Settings``) and the API's ``_run(token, request, count)``. A call of any other shape
    asks for :data:`MAX_SECONDS`, so a generation is never cut short.
    """
    found = _from_request(args, kwargs) or _from_page(args)
    if found is None:
        log.warning("ZeroGPU: cannot read steps and references from this call; asking for %d s", MAX_SECONDS)
        return MAX_SECONDS
    return gpu_seconds(*found)


def _from_request(args: tuple, kwargs: dict) -> tuple[int, int, int] | None:
    """(steps, references, count) of an API call: a GenerationRequest followed by the image count."""
    values = [*args, *kwargs.values()]
    for k, value in enumerate(values):
        config, images = getattr(value, "config", None), getattr(value, "images", None)
        if isinstance(config, GenerationConfig) and isinstance(images, tuple):
            count = kwargs.get("count", values[k + 1] if k + 1 < len(values) else 1)
            return config.steps, len(images), _whole(count, 1)
    return None


def _from_page(args: tuple) -> tuple[int, int, int] | None:
    """(steps, references, count) of the page's call: its state's filled slots and the trailing settings."""
    from dataclasses import fields

    from sigma_studio.webui.page import Settings

    names = [f.name for f in fields(Settings)]
    if not args or not hasattr(args[0], "slots") or len(args) < 4 + len(names):
        return None
    settings = dict(zip(names, args[len(args) - len(names) :], strict=True))
    steps = _whole(settings.get("steps"), None)
    if steps is None:
        return None
    references = sum(1 for slot in args[0].slots if getattr(slot, "image", None))
    return steps, references, _whole(settings.get("count"), 1)


def _whole(value, fallback):
    """``value`` as a whole number (the page's sliders send floats), or ``fallback``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return fallback
    return int(value)


def gpu_wrapper(spaces):
    """The web UI's ``gpu_wrapper`` on ZeroGPU: ``spaces.GPU`` asking for :func:`call_seconds` each call."""
    return spaces.GPU(duration=call_seconds)
