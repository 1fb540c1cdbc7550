"""Configuration dataclasses: architecture, image transforms and generation settings.

Every default is defined once, here. ``__post_init__`` validates and names the user-facing setting in its
error message. The architecture of a checkpoint directory is read from its JSON configs and tensor shapes by
:func:`model.weights.arch_config.read_arch_config`; the presets below describe the released models and the toy model.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .errors import InputError

# Loading modes (described in model/weights/modes.py); defined here, the leaf module, so LoaderConfig can check them.
Mode = Literal["auto", "bf16", "fp8", "nf4", "int8", "offload", "multi-gpu", "cpu"]
MODES: tuple[str, ...] = get_args(Mode)
Layout = Literal["released", "trained"]
RenormType = Literal["global", "channel", "text_channel"]
RENORM_TYPES: tuple[str, ...] = get_args(RenormType)
LAYOUTS: tuple[str, ...] = get_args(Layout)
MAX_STEPS = 1000
MIN_STEPS = 2  # N steps are N-1 Euler updates: one at least
# --speed presets: how often the guidance branches are evaluated (guidance_every). "fast" was chosen by
# `sigma bench --suite speed` (docs/PERF.md): the fewest evaluations within 2 points of the exact path's accuracy.
SPEEDS: dict[str, int] = {"exact": 1, "fast": 6}
DEFAULT_SPEED = "exact"
DEFAULT_MODEL = "sigma"  # what --model, load_pipeline() and the web UI load when nothing is named


def speed_every(speed: str, option: str = "speed") -> int:
    """A ``speed`` preset (``--speed``, the web API's ``speed``, ``pipe(..., speed="fast")``) as
    :attr:`GenerationConfig.guidance_every`; an unknown one is an InputError naming ``option``."""
    if speed not in SPEEDS:
        raise InputError(f"{option} {speed} is not one of {', '.join(SPEEDS)}")
    return SPEEDS[speed]


MAX_SEED = 2**63 - 1  # seeds are signed 64-bit integers everywhere they are stored (PNG metadata, JSON, numpy)


def _int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_int(value) -> bool:
    return _int(value) and value > 0


def _check_finite(option: str, value) -> None:
    """A real, finite number: nan and inf pass every range check below and turn the image black."""
    try:
        finite = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        finite = False
    if not finite:
        shown = f"{value!r}"[:40]
        raise InputError(f"{option} must be a finite number (got {shown})")


@dataclass(frozen=True)
class LLMConfig:
    """The Qwen2 Mixture-of-Transformers decoder (two experts per layer)."""

    hidden_size: int = 3584
    num_layers: int = 28
    num_heads: int = 28
    num_kv_heads: int = 4
    intermediate_size: int = 18944
    vocab_size: int = 152064
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        sizes = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "vocab_size")
        bad = [f"{k}={getattr(self, k)!r}" for k in sizes if not _positive_int(getattr(self, k))]
        if bad:
            raise InputError(f"LLMConfig: {', '.join(bad)} must be positive integers")
        if self.hidden_size % self.num_heads:
            raise InputError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise InputError(f"num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class ViTConfig:
    """The SigLIP NaViT encoder (``num_layers`` = layers actually built: the file's value minus one)."""

    hidden_size: int = 1152
    num_layers: int = 26
    num_heads: int = 16
    intermediate_size: int = 4304
    patch_size: int = 14
    max_patches_per_side: int = 70
    layer_norm_eps: float = 1e-6


@dataclass(frozen=True)
class VAEConfig:
    """The FLUX-style autoencoder."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 16
    in_channels: int = 3
    out_ch: int = 3
    scale_factor: float = 0.3611
    shift_factor: float = 0.1159

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class ResizeSpec:
    """The released "max long edge / min short edge, stride aligned" resize rule."""

    max_size: int
    min_size: int
    stride: int
    max_pixels: int = 14 * 14 * 9 * 1024


ROUTING_STEP = 10  # SIGMA-GEN's routing-map levels per subject (the paper's)
# How SIGMA's group mask scopes an attribute token (with group_mask on): "eq9", the paper's eq. 9 as written (it
# hides other groups' images; under the causal mask the token cannot see its own image either, which comes after
# it); "intent", Fig. 2's stated intent (the token and its own group's image tokens see each other both ways).
MASK_SCOPE = "eq9"  # the default scope (today's mask, and what the released weights would get with the mask on)
GROUP_MASK_SCOPES: tuple[str, ...] = (MASK_SCOPE, "intent")
# The Table 4 ablation's three arms by name: (group_mask, group_mask_scope); "off" is the released training's.
MASK_ARMS: dict[str, tuple[bool, str]] = {"off": (False, MASK_SCOPE), "eq9": (True, "eq9"), "intent": (True, "intent")}


def check_mask_scope(scope: str, given: str) -> None:
    """A group-mask scope is one of GROUP_MASK_SCOPES; ``given`` is the setting as its user wrote it."""
    if scope not in GROUP_MASK_SCOPES:
        raise InputError(f"{given} is not one of {', '.join(GROUP_MASK_SCOPES)} (eq9: eq. 9 as written; intent: "
                         "Fig. 2, an attribute token and its own image see each other)")  # fmt: skip


SHEET_ROWS = 5  # identity-sheet cells per column (the paper stacks its subjects in one column)
# What a model was trained to read (ArchConfig.skills, stored with it); a request that needs another is warned.
SKILLS: dict[str, str] = {
    "attribute_tokens": "SIGMA's attribute tokens (<subject>, <style>, ...)",
    "boxes": "box layouts (--box)",
    "canny": "Canny-edge layouts (--canny)",
    "depth": "depth layouts (--depth, --depth-map)",
    "subjects": "SIGMA-GEN subjects (--subject by box, mask or 3-D box; --background)",
    "plans": "a plan written before the picture (--think)",
}
SIGMA_SKILLS: tuple[str, ...] = ("attribute_tokens", "boxes", "canny", "depth")  # SIGMA's interleaved data


@dataclass(frozen=True)
class ArchConfig:
    """Everything that fixes tensor shapes and the numerics of one model.

    ``vit`` is ``None`` for checkpoints without the understanding encoder (SIGMA). ``group_mask`` and
    ``attribute_projection`` are SIGMA's two mechanisms; they are stored with a checkpoint's own config and
    are off for the released weights.
    """

    llm: LLMConfig = field(default_factory=LLMConfig)
    vit: ViTConfig | None = field(default_factory=ViTConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    latent_patch_size: int = 2
    max_latent_size: int = 64
    vae_transform: ResizeSpec = ResizeSpec(1024, 512, 16)
    vit_transform: ResizeSpec = ResizeSpec(980, 224, 14)
    # ViT slots of the SIGMA training layout use the training ViT transform, applied to the original image.
    vit_slot_transform: ResizeSpec = ResizeSpec(518, 224, 14)
    # Grid width of the (ignored) ViT slot position ids when there is no ViT: the training DataConfig default.
    vit_slot_grid: int = 70
    train_timestep_shift: float = 1.0
    num_attribute_tokens: int = 15
    # Most tokens one context may hold (prompt + references + output); the released trainer packs 36,864.
    max_context_tokens: int = 36864
    group_mask: bool = False
    group_mask_scope: str = MASK_SCOPE  # one of GROUP_MASK_SCOPES: what the group mask lets an attribute token see
    attribute_projection: bool = False
    default_layout: Layout = "released"
    # SIGMA-GEN routing maps: subject i (1-based) has intensity routing_step * i. The paper's 10 allows 10 subjects
    # (25 would too); a model trained with another step stores it, so its controls are drawn the way it learnt them.
    routing_step: int = ROUTING_STEP
    # SIGMA-GEN identity sheets: cells per column before the next column starts (the paper's one column of up to 5);
    # a small world stores 2 so that 3-5 subjects form a grid and each keeps at least 2 x 2 latent tokens.
    sheet_rows: int = SHEET_ROWS
    # What the model was trained to read (keys of SKILLS); None: not known (a finetune of unknown data, random
    # weights), and nothing is warned.
    skills: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_mask_scope(self.group_mask_scope, f"group_mask_scope={self.group_mask_scope!r}")

    @property
    def patch_latent_dim(self) -> int:
        return self.latent_patch_size**2 * self.vae.z_channels

    @property
    def pixels_per_token(self) -> int:
        return self.vae.downsample * self.latent_patch_size

    @property
    def max_image_size(self) -> int:
        return self.max_latent_size * self.pixels_per_token

    @property
    def visual_und(self) -> bool:
        return self.vit is not None

    def replace(self, **changes) -> ArchConfig:
        return dataclasses.replace(self, **changes)


INITS: tuple[str, ...] = ("weights", "random")


@dataclass(frozen=True)
class LoaderConfig:
    """How to load a model; the CLI's and the web UI's loading options map onto these fields one to one."""

    model: str = DEFAULT_MODEL  # sigma | bagel | shapes | tiny | a Hugging Face repo id | a local directory
    mode: str = "auto"  # one of MODES
    device: str | None = None  # execution device (default cuda:0 for GPU modes, cpu otherwise)
    dtype: Any = None  # torch dtype of the network (default bf16 on GPU, float32 on CPU)
    weights: str | None = None  # a weights file that replaces the source's own
    cache_dir: str | None = None  # Hugging Face cache (default HF_HOME / ~/.cache/huggingface)
    token: str | None = None  # Hugging Face token (default HF_TOKEN)
    revision: str | None = None
    local_files_only: bool = False
    max_gpu_memory: str | None = None  # the whole GPU budget of --mode offload on GPU 0, e.g. "10GiB"
    max_cpu_memory: str | None = None  # offload budget in CPU memory; layers beyond it go to disk
    offload_dir: str | None = None  # where disk-offloaded layers live
    visual_und: bool | None = None  # build the ViT (default: when the weights have it)
    seed: int = 0  # weight seed of the tiny model, and of a fresh initialisation
    init: str = INITS[0]  # weights: the source's trained weights | random: its architecture, freshly initialised
    accel: str = "auto"  # speed-ups of the denoising step: none | auto | graphs,compile (model.run.accel)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"--mode {self.mode} is not one of {', '.join(MODES)}")
        if self.init not in INITS:
            raise InputError(f"--init {self.init} is not one of {', '.join(INITS)}")
        if self.max_gpu_memory is not None and not _SIZE.fullmatch(str(self.max_gpu_memory).strip()):
            raise InputError(
                f"--max-gpu-memory {self.max_gpu_memory!r} is not a size: write a number and a unit, e.g. 10GiB or 8GB"
            )

    def replace(self, **changes) -> LoaderConfig:
        return dataclasses.replace(self, **changes)


_SIZE = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)  # what accelerate parses


# Limits of the generation settings, each declared once (GenerationConfig checks them; the CLI's help and the web UI
# can read them). Beyond them a generation does not fail loudly, it silently returns a black or noise picture.
MAX_GUIDANCE = 100.0  # --cfg-text / --cfg-img: released defaults 4 / 2, the web UI offers up to 10; a scale multiplies
# a velocity difference every step, and past ~100 the state leaves the decoder's range (1e308 overflows to inf/NaN)
SHIFT_RANGE = (0.01, 100.0)  # --shift: t = s*u / (1 + (s-1)*u); released 3, the trained layout 1. Inside this range
# the schedule is a finite decreasing grid from 1 to 0; far outside it float32 rounds it to one jump (or 0/0 = NaN)


def _check_range(option: str, value, low: float, high: float, default: float, what: str = "") -> None:
    _check_finite(option, value)
    if not low <= value <= high:
        raise InputError(f"{option} must be {what}from {low:g} to {high:g} (got {value:g}); the default is {default:g}")


@dataclass(frozen=True)
class GenerationConfig:
    """Sampler and prompt-layout settings of one generation.

    ``size`` is (height, width) in pixels; ``None`` takes the last placed reference's size (the released rule),
    or the model's largest square when there is no reference. ``layout`` and ``group_mask`` default to the
    checkpoint's own settings.
    """

    steps: int = 50  # --steps: 2..MAX_STEPS (N steps are N-1 Euler updates)
    cfg_text_scale: float = 4.0  # --cfg-text: 0..MAX_GUIDANCE (<= 1 turns text guidance off)
    cfg_img_scale: float = 2.0  # --cfg-img: 0..MAX_GUIDANCE (<= 1 turns image guidance off)
    cfg_interval: tuple[float, float] = (0.0, 1.0)  # --cfg-interval: 0 <= low <= high <= 1, times t with guidance
    cfg_renorm_type: RenormType = "text_channel"  # --renorm: one of RENORM_TYPES
    cfg_renorm_min: float = 0.0  # --renorm-min: 0..1, the smallest factor the guidance renorm may scale by
    timestep_shift: float = 3.0  # --shift: SHIFT_RANGE
    size: tuple[int, int] | None = None  # --size: positive; the model's stride and limit are checked per model
    seed: int | None = None  # --seed: 0..MAX_SEED
    layout: Layout | None = None  # --layout: one of LAYOUTS
    group_mask: bool | None = None  # --group-mask/--no-group-mask
    guidance_every: int = 1  # evaluate the guidance branches every N steps, reuse their offset between (1 = exact)
    forecast_every: int = 1  # evaluate the network every N steps, forecast each branch's velocity between (1 = exact)
    think: bool | None = None  # --think/--no-think: write a plan, then draw (model.run.think); None: as trained

    def __post_init__(self) -> None:
        if not _int(self.steps):
            raise InputError(f"--steps must be a whole number (got {self.steps!r})")
        if self.steps < MIN_STEPS:
            raise InputError(f"--steps must be at least {MIN_STEPS} (got {self.steps}): N steps give N-1 Euler updates")
        for name in ("guidance_every", "forecast_every"):
            every = getattr(self, name)
            if not isinstance(every, int) or not 1 <= every <= MAX_STEPS:
                raise InputError(f"--{name.replace('_', '-')} must be a whole number from 1 (got {every!r})")
        if self.steps > MAX_STEPS:
            raise InputError(f"--steps must be at most {MAX_STEPS} (got {self.steps}); 50 is the released default")
        if self.seed is not None and not (_int(self.seed) and 0 <= self.seed <= MAX_SEED):
            raise InputError(f"--seed must be a whole number from 0 to 2**63 - 1 (got {self.seed!r})")
        if not isinstance(self.cfg_interval, tuple | list) or len(self.cfg_interval) != 2:
            raise InputError(f"--cfg-interval takes two numbers, low and high (got {self.cfg_interval!r})")
        for option, value in (
            ("--cfg-text", self.cfg_text_scale),
            ("--cfg-img", self.cfg_img_scale),
            ("--shift", self.timestep_shift),
            ("--renorm-min", self.cfg_renorm_min),
            *(("--cfg-interval", v) for v in self.cfg_interval),
        ):
            _check_finite(option, value)
        if self.cfg_renorm_type not in RENORM_TYPES:
            raise InputError(
                f"--renorm '{self.cfg_renorm_type}' is not supported; choose one of {', '.join(RENORM_TYPES)}"
            )
        lo, hi = self.cfg_interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise InputError(f"--cfg-interval must satisfy 0 <= low <= high <= 1 (got {lo}, {hi})")
        default = GenerationConfig.__dataclass_fields__
        for option, name, (low, high), what in (
            ("--renorm-min", "cfg_renorm_min", (0.0, 1.0), ""),
            ("--shift", "timestep_shift", SHIFT_RANGE, "positive, "),
            ("--cfg-text", "cfg_text_scale", (0.0, MAX_GUIDANCE), ""),
            ("--cfg-img", "cfg_img_scale", (0.0, MAX_GUIDANCE), ""),
        ):
            _check_range(option, getattr(self, name), low, high, default[name].default, what)
        if self.layout is not None and self.layout not in LAYOUTS:
            raise InputError(f"--layout '{self.layout}' is not one of {', '.join(LAYOUTS)}")
        for option, value in (("--group-mask", self.group_mask), ("--think", self.think)):
            if value is not None and not isinstance(value, bool):
                raise InputError(f"{option} is on or off (true or false), not {value!r}")
        if self.size is not None:
            if not isinstance(self.size, tuple | list) or len(self.size) != 2 or not all(_int(s) for s in self.size):
                raise InputError(f"--size must be two whole numbers, (height, width) (got {self.size!r})")
            h, w = self.size
            if h <= 0 or w <= 0:
                raise InputError(f"--size must be positive (got {w}x{h})")

    def replace(self, **changes) -> GenerationConfig:
        """A copy with ``changes``; ``speed="fast"`` is accepted for ``guidance_every`` (see :data:`SPEEDS`)."""
        if "speed" in changes:
            speed = changes.pop("speed")
            if "guidance_every" in changes:
                raise InputError("give speed or guidance_every, not both: speed is a name for a guidance_every")
            changes["guidance_every"] = speed_every(speed)
        return dataclasses.replace(self, **changes)
