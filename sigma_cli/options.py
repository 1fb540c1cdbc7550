"""Command-line options shared by the commands. Every default and choice list is read from the model layer's
dataclasses and tuples (GenerationConfig, ControlSpec, MODES, ...): nothing is declared a second time here.

Sampler options default to ``None`` (= keep the dataclass's value, or the ``--from`` record's value); their help
shows the dataclass default.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from sigma_studio.model.config import (
    DEFAULT_MODEL,
    DEFAULT_SPEED,
    LAYOUTS,
    MODES,
    RENORM_TYPES,
    SPEEDS,
    GenerationConfig,
    LoaderConfig,
    speed_every,
)
from sigma_studio.model.errors import InputError
from sigma_studio.model.request.structure import ControlSpec
from sigma_studio.model.weights.modes import ACTIVATION_RESERVE, GiB
from sigma_studio.model.weights.preflight import MODEL_CHOICES

G = GenerationConfig()
C = ControlSpec()
L = LoaderConfig()


def default(value) -> str:
    """`` [default: value]`` for a help text (escaped: the help is Rich markup)."""
    return f" \\[default: {value}]"


def flag(name: str, help: str):
    """A boolean flag shown without a metavar."""
    return typer.Option(name, help=help, metavar="")


# -- loading -------------------------------------------------------------------------------------------------------
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help=f"{' | '.join(MODEL_CHOICES)} | HF repo id | directory \\[default: {DEFAULT_MODEL}]"
    ),
]
ModeOpt = Annotated[str, typer.Option(help=" | ".join(MODES), show_default=False)]
MODE = L.mode  # the default --mode, from LoaderConfig
GpuMemOpt = Annotated[
    str | None,
    typer.Option(
        help=f"the whole GPU budget of --mode offload, e.g. 10GiB: the weights get what "
        f"{ACTIVATION_RESERVE // GiB} GiB leave"
    ),
]
OffloadOpt = Annotated[str | None, typer.Option(help="folder for layers offloaded to disk")]
AccelOpt = Annotated[
    str,
    typer.Option(
        help="speed-ups of the denoising step, same function: none | auto (graphs,compile on a GPU in bf16 or fp8 "
        "when several images are made; none for one) | a comma list of graphs, compile, autotune (compile with "
        "max-autotune: long first compile)"
    ),
]
CacheOpt = Annotated[str | None, typer.Option(help="Hugging Face cache folder (default: HF_HOME)")]
DebugOpt = Annotated[bool, flag("--debug", "show tracebacks")]
JsonOpt = Annotated[bool, flag("--json", "print the result record as JSON instead")]
OverwriteOpt = Annotated[bool, flag("--overwrite", "replace an existing --out file")]

# -- sampler (None: the dataclass default, or the --from record's value) ------------------------------------------
Steps = Annotated[int | None, typer.Option(help="denoising steps" + default(G.steps))]
CfgText = Annotated[float | None, typer.Option("--cfg-text", help="text guidance scale" + default(G.cfg_text_scale))]
CfgImg = Annotated[float | None, typer.Option("--cfg-img", help="image guidance scale" + default(G.cfg_img_scale))]
INTERVAL = ",".join(f"{v:g}" for v in G.cfg_interval)
CfgInterval = Annotated[str | None, typer.Option(help="guidance interval LOW,HIGH of t" + default(INTERVAL))]
Renorm = Annotated[str | None, typer.Option(help=" | ".join(RENORM_TYPES) + default(G.cfg_renorm_type))]
Shift = Annotated[float | None, typer.Option(help="timestep shift" + default(G.timestep_shift))]
RenormMin = Annotated[
    float | None, typer.Option("--renorm-min", help="lower bound of the guidance renorm" + default(G.cfg_renorm_min))
]
Seed = Annotated[int | None, typer.Option(help="random seed" + default("random; the seed used is reported"))]
Layout = Annotated[str | None, typer.Option(help=" | ".join(LAYOUTS) + default("the checkpoint's"))]
GroupMask = Annotated[
    bool | None,
    typer.Option(
        "--group-mask/--no-group-mask", help="SIGMA group-scoped mask" + default("the checkpoint's"), metavar=""
    ),
]
ThinkOpt = Annotated[
    bool | None,
    typer.Option(
        "--think/--no-think",
        help="the model writes a plan, then draws with it (BAGEL's think mode)" + default("as the model was trained"),
        metavar="",
    ),
]
OutFile = Annotated[str | None, typer.Option("--out", "-o", help="output PNG" + default("outputs/sigma-<time>.png"))]
BatchSize = Annotated[str | None, typer.Option(help="WIDTHxHEIGHT" + default("each row's ground-truth model size"))]
BatchLayout = Annotated[str | None, typer.Option(help=" | ".join(LAYOUTS) + default("trained: the rows' own layout"))]
SpeedOpt = Annotated[
    str | None,
    typer.Option(
        help=" | ".join(SPEEDS) + ": fast evaluates the guidance branches every "
        f"{SPEEDS['fast']} steps (docs/PERF.md)" + default(DEFAULT_SPEED),
    ),
]
ForecastOpt = Annotated[
    int | None,
    typer.Option(
        help="run the network every N steps and forecast each branch's velocity in between (TaylorSeer-style; "
        "docs/PERF.md)" + default(f"{G.forecast_every}: exact"),
    ),
]
Size = Annotated[str | None, typer.Option(help="WIDTHxHEIGHT" + default("the last reference's model size"))]

# -- structure controls (SIGMA layout and SIGMA-GEN subjects) ------------------------------------------------------
CannyOpt = Annotated[str | None, typer.Option(help="image whose Canny edges become a <layout> reference")]
CannyLowOpt = Annotated[int | None, typer.Option(help="Canny low threshold" + default(C.canny_low))]
CannyHighOpt = Annotated[int | None, typer.Option(help="Canny high threshold" + default(C.canny_high))]
CannyBlurOpt = Annotated[
    int | None, typer.Option(help="Gaussian blur before Canny (odd; 0 = none)" + default(C.canny_blur))
]
DepthOpt = Annotated[str | None, typer.Option(help="image whose estimated depth becomes a <layout> reference")]
DepthMapOpt = Annotated[str | None, typer.Option(help="a ready depth map to use as the <layout> reference")]
BoxOpt = Annotated[
    list[str] | None, typer.Option("--box", help="x0,y0,x1,y1\\[:label] (pixels or 0..1), repeatable", metavar="BOX")
]
MaskOpt = Annotated[list[str] | None, typer.Option("--mask", help="subject mask image, repeatable", metavar="FILE")]
SubjectOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--subject",
        help="identity image or reference name: FILE\\[@box=..|@mask=..\\[,depth=..]|@box3d=..], repeatable",
        metavar="SUBJECT",
    ),
]
SceneDepthOpt = Annotated[
    str | None, typer.Option(help="with --subject: a whole-scene depth map as the structure (not only the subjects')")
]
BackgroundOpt = Annotated[str | None, typer.Option(help="keep this background; subjects are inserted into it")]
ComposeOpt = Annotated[bool, flag("--compose", "with --subject: the prompt describes the whole picture")]
FacesOpt = Annotated[bool, flag("--faces", "with --subject: subjects are people (<id> instead of <subject>)")]


def parse_size(value: str | None) -> tuple[int, int] | None:
    """``1024x768`` (width x height) or ``1024`` (square) -> (height, width)."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX×*]\s*(\d+))?\s*", value)
    if not m:
        raise InputError(f"--size '{value}' is not a size: write WIDTHxHEIGHT, e.g. 1024x768")
    w = int(m.group(1))
    return int(m.group(2) or w), w


def parse_interval(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        lo, hi = (float(x) for x in value.split(","))
    except ValueError:
        raise InputError(f"--cfg-interval '{value}' is not LOW,HIGH (e.g. 0.4,1.0)") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"--cfg-interval '{value}' must be two finite numbers in [0, 1]")
    return lo, hi


def absolute(path: str) -> str:
    """A path made absolute when it exists (a ``--model DIR`` stored in a record then works from anywhere)."""
    return str(Path(path).resolve()) if os.path.exists(path) else path  # (os.path: False, not OSError, for odd names)


# -- option groups: each declared once, expanded into every command that takes it (see groups.py) ---------------
@dataclass(frozen=True)
class SamplerOptions:
    """The sampler options every generating command shares (``size``, ``seed`` and ``layout`` differ per command:
    a batch has per-row sizes and one seed for every row)."""

    steps: Steps = None
    cfg_text: CfgText = None
    cfg_img: CfgImg = None
    cfg_interval: CfgInterval = None
    renorm: Renorm = None
    renorm_min: RenormMin = None
    shift: Shift = None
    group_mask: GroupMask = None
    speed: SpeedOpt = None
    forecast_every: ForecastOpt = None
    think: ThinkOpt = None

    def config(self, base: GenerationConfig | None = None, **more) -> GenerationConfig:
        """``base`` (or the dataclass's defaults) with the options given here and in ``more`` (None: not given)."""
        values = dict(
            steps=self.steps, cfg_text_scale=self.cfg_text, cfg_img_scale=self.cfg_img, timestep_shift=self.shift,
            cfg_interval=parse_interval(self.cfg_interval), cfg_renorm_type=self.renorm,
            cfg_renorm_min=self.renorm_min, group_mask=self.group_mask, **more,
            guidance_every=speed_every(self.speed, "--speed") if self.speed is not None else None,
            forecast_every=self.forecast_every, think=self.think,
        )  # fmt: skip
        if "size" in values:
            values["size"] = parse_size(values["size"])
        return (base or GenerationConfig()).replace(**{k: v for k, v in values.items() if v is not None})


@dataclass(frozen=True)
class ControlOptions:
    """The structure controls: SIGMA's layout references (Canny, depth, boxes) and SIGMA-GEN's subjects."""

    canny: CannyOpt = None
    canny_low: CannyLowOpt = None
    canny_high: CannyHighOpt = None
    canny_blur: CannyBlurOpt = None
    depth: DepthOpt = None
    depth_map: DepthMapOpt = None
    box: BoxOpt = None
    mask: MaskOpt = None
    subject: SubjectOpt = None
    background: BackgroundOpt = None
    scene_depth: SceneDepthOpt = None

    def given(self, **more) -> dict:
        """The options the user actually gave, by ControlSpec field (unset values, empty lists and False dropped;
        0 is a value)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values |= {"boxes": values.pop("box"), "masks": values.pop("mask"), "subjects": values.pop("subject")}
        return {k: v for k, v in (values | more).items() if not (v is None or v is False or v == [])}


def control_spec(**options) -> ControlSpec:
    """A ControlSpec from control options by field name (lists become tuples)."""
    known = {f.name for f in dataclasses.fields(ControlSpec)}
    return ControlSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items() if k in known})


@dataclass(frozen=True)
class LoadOptions:
    """Where the model comes from and how it is loaded."""

    model: ModelOpt = None
    mode: ModeOpt = MODE
    max_gpu_memory: GpuMemOpt = None
    offload_dir: OffloadOpt = None
    cache_dir: CacheOpt = None
    accel: AccelOpt = L.accel

    def loader_config(self, fallback: str | None = None) -> LoaderConfig:
        """The options as a LoaderConfig (``--model``, else ``fallback``, else the default model); an offload option
        with a --mode that never offloads is refused (it would be silently ignored)."""
        mode = self.mode
        if self.max_gpu_memory is not None and mode not in ("auto", "offload"):
            raise InputError(f"--max-gpu-memory is the budget of --mode offload (or auto); --mode {mode} ignores it")
        if self.offload_dir is not None and mode not in ("auto", "offload", "multi-gpu"):
            raise InputError(f"--offload-dir holds layers offloaded to disk; --mode {mode} never offloads: drop it")
        model = absolute(self.model or fallback or DEFAULT_MODEL)
        return LoaderConfig(model=model, mode=mode, max_gpu_memory=self.max_gpu_memory, offload_dir=self.offload_dir,
                            cache_dir=self.cache_dir, accel=self.accel)  # fmt: skip
