"""The parameters of the web API's endpoints (``/generate``, ``/preview``; :mod:`webui.api`), declared once.

They are also the fields of ``POST /api/v1/generate`` (:mod:`webui.rest`) and the ``extra_body`` of the OpenAI
routes (:mod:`webui.openai_api`), which read them from the endpoint's signature. A default is the dataclasses' own
(``GenerationConfig``, ``ControlSpec``) where they have the setting. New parameters go at the end of both lists, so
a caller that passes them by position keeps working.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from gradio.data_classes import FileData

from sigma_studio.model import GenerationConfig
from sigma_studio.model.config import DEFAULT_SPEED, RenormType
from sigma_studio.model.request.structure import ControlSpec

G, C = GenerationConfig(), ControlSpec()  # every default of the API comes from these dataclasses
RANDOM_SEED = -1  # a seed the pipeline draws (its seed None), and reports
AUTO_SIZE = "auto"  # the last reference's size
COUNT = 1  # images a run makes, one per seed: seed, seed + 1, ...
MAX_COUNT = 4  # the most a call may ask for (the page's "images per run")


@dataclass(frozen=True)
class ApiParam:
    """One parameter of the API's endpoints, and so a field of the REST and OpenAI routes: its name, its type hint
    (``gr.api`` documents and checks the value by it; the REST route converts form text by it) and its default
    (none: the caller must give it)."""

    name: str
    hint: Any
    default: Any = inspect.Parameter.empty

    def parameter(self) -> inspect.Parameter:
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        return inspect.Parameter(self.name, kind, default=self.default, annotation=self.hint)


# SIGMA-GEN: references placed as subjects by 3-D box or mask (2-D boxes: the boxes' reference column), optionally
# inserted into a kept background; the names of the page's layout inputs (handlers.LayoutInputs)
SUBJECT_PARAMS: tuple[ApiParam, ...] = (
    ApiParam("background", FileData | None, None),
    ApiParam("boxes3d", list[list] | None, None),
    ApiParam("masks", list[list] | None, None),
)
PREVIEW_PARAMS: tuple[ApiParam, ...] = (
    ApiParam("prompt", str),
    ApiParam("images", list[FileData] | None, None),
    ApiParam("tokens", list[list[str]] | None, None),
    ApiParam("layout", str, "none"),
    ApiParam("layout_image", FileData | None, None),
    ApiParam("boxes", list[list] | None, None),
    *SUBJECT_PARAMS,
)
GENERATE_PARAMS: tuple[ApiParam, ...] = (
    *PREVIEW_PARAMS[: -len(SUBJECT_PARAMS)],
    ApiParam("steps", int, G.steps),
    ApiParam("cfg_text", float, G.cfg_text_scale),
    ApiParam("cfg_img", float, G.cfg_img_scale),
    ApiParam("cfg_low", float, G.cfg_interval[0]),
    ApiParam("cfg_high", float, G.cfg_interval[1]),
    ApiParam("renorm", RenormType, G.cfg_renorm_type),
    ApiParam("shift", float, G.timestep_shift),
    ApiParam("seed", int, RANDOM_SEED),
    ApiParam("size", str, AUTO_SIZE),
    ApiParam("group_mask", bool | None, None),  # None: the model's own setting
    ApiParam("count", int, COUNT),
    ApiParam("speed", str, DEFAULT_SPEED),
    ApiParam("think", bool | None, None),  # None: as the model was trained (its plans skill)
    ApiParam("canny_low", int, C.canny_low),
    ApiParam("canny_high", int, C.canny_high),
    ApiParam("canny_blur", int, C.canny_blur),
    *SUBJECT_PARAMS,
)


def takes(params: tuple[ApiParam, ...]):
    """Declare that the decorated endpoint ``fn(self, *args, **kwargs)`` takes ``params``: they become its
    signature and type hints (what ``gr.api`` documents and calls it with, and what the REST route reads), while
    its return annotation stays its own. The endpoint reads its call with :func:`arguments`."""

    def declare(fn):
        own = inspect.signature(fn)
        fn.__signature__ = own.replace(parameters=[own.parameters["self"], *(p.parameter() for p in params)])
        fn.__annotations__ = {p.name: p.hint for p in params} | {"return": fn.__annotations__["return"]}
        return fn

    return declare


def arguments(params: tuple[ApiParam, ...], args: tuple, kwargs: dict) -> dict:
    """A call's arguments by name, over the defaults of ``params`` (a call Python would refuse is a TypeError)."""
    bound = inspect.Signature([p.parameter() for p in params]).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)
