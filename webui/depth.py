"""Whether this server can estimate depth, and what the depth tab says about it.

The depth of a picture is estimated by a model fetched from the Hugging Face hub (model/request/control.py). Offline
and not in the cache, it cannot be: the tab says so when the page loads, the preview promises no depth part it
cannot make, and Generate says what to do instead (a ready depth map, or ``sigma download depth`` on the server).
"""

from __future__ import annotations

from sigma_studio.model.errors import SigmaError

DOWNLOAD = "sigma download depth"
READY = "Upload a ready depth map instead (brighter = nearer)"


def estimator_missing() -> str | None:
    """Why this server cannot estimate depth (None: it can). The model is looked for in the Hugging Face cache
    only (no network); not there, it is missing when the hub is off (``HF_HUB_OFFLINE``), and otherwise the first
    estimate downloads it."""
    from sigma_studio.model.hub import HubOptions, offline, snapshot
    from sigma_studio.model.request.control import DEFAULT_DEPTH_MODEL, DEPTH_PATTERNS

    try:
        snapshot(DEFAULT_DEPTH_MODEL, DEPTH_PATTERNS, HubOptions(local_files_only=True), "The depth model", DOWNLOAD,
                 alternative="")  # fmt: skip
    except SigmaError:
        if offline():
            model = f"its depth model ({DEFAULT_DEPTH_MODEL}) is not downloaded and the server is offline"
            return f"This server cannot estimate depth: {model}. {READY}, or run `{DOWNLOAD}` on the server"
    return None


def blocked(layout) -> str | None:
    """Why ``layout`` (a :class:`handlers.LayoutInputs`, or None) cannot be made on this server (None: it can): a
    depth layout from a picture, without a ready depth map, where the depth cannot be estimated."""
    if layout is None or layout.kind != "depth" or layout.depth_map or not layout.depth_image:
        return None
    return estimator_missing()


def tab_note() -> str:
    """The depth tab's note (Markdown), read when the page loads."""
    missing = estimator_missing()
    if missing:
        return f"⚠ {missing}."
    return (f"The picture's depth is estimated by a depth model (its first use downloads it where it is not yet "
            f"here: `{DOWNLOAD}`). {READY}.")  # fmt: skip
