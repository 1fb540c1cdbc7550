"""Training configuration: one dataclass per concern; ``sigma finetune`` options map onto these fields."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path

from sigma_studio.model.config import (  # defined once, with Loader/GenerationConfig
    INITS,
    MASK_SCOPE,
    MAX_SEED,
    MAX_STEPS,
    check_mask_scope,
)
from sigma_studio.model.errors import InputError
from sigma_studio.model.shapes.labels import HEADS, REFERENCE_SETS

# `sigma finetune --recipe`: "release" is the released training scripts' choices (the TrainConfig defaults: they
# produced the released SIGMA weights); "paper" is the SIGMA paper's (§4): the generation branch only, 50 000 steps,
# the attribute projection W_tau and the group-scoped mask on. Options given on the command line win over either.
RECIPES: dict[str, dict] = {
    "release": {},
    "paper": {"trainable": "gen", "steps": 50_000, "attribute_projection": True, "group_mask": True},
}
# adamw: the released scripts' optimizer; prodigy: the SIGMA-GEN paper's (prodigyopt, the `recipes` extra), whose
# --lr is a multiplier of the step size it estimates itself (1.0 is its usual value, so its bound is its own).
DEFAULT_RECIPE = "release"
OPTIMIZERS: tuple[str, ...] = ("adamw", "prodigy")
MAX_PRODIGY_LR = 10.0
MAX_LR = 0.1  # --lr above this only diverges with AdamW (the recipes use 2e-5 to 1e-3)
TRAINABLE = ("all", "gen")  # --train choices (LoRA ignores it)
ALL_LINEAR = "all-linear"


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_int(option: str, value, low: int, high: int | None = None) -> None:
    """A whole number in [low, high]; the error names ``option``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise InputError(f"{option} must be a whole number of at least {low} (got {value!r})")
    if high is not None and value > high:
        raise InputError(f"{option} must be at most {high} (got {value!r})")


def check_number(
    option: str,
    value,
    low: float = 0.0,
    *,
    strict: bool = False,
    below: float | None = None,
    at_most: float | None = None,
) -> None:
    """A finite number >= low (> low with ``strict``), < ``below`` and <= ``at_most``; the error names ``option``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InputError(f"{option} must be a finite number (got {value!r})")
    high = below if below is not None else at_most
    over = (below is not None and value >= below) or (at_most is not None and value > at_most)
    if value < low or (strict and value == low) or over:
        if high is None:
            bound = f"{'above' if strict else 'at least'} {low:g}"
        else:
            bound = f"in {'(' if strict else '['}{low:g}, {high:g}{')' if below is not None else ']'}"
        raise InputError(f"{option} must be {bound} (got {value!r})")


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = 8
    alpha: float = 32.0
    dropout: float = 0.05
    # "all-linear" (the release's option: every nn.Linear of the model except the output layer lm_head),
    # or a regex that the names of the adapted linear layers match in full
    targets: str = ALL_LINEAR

    def __post_init__(self) -> None:
        check_int("--lora-rank", self.rank, 1)
        check_number("--lora-alpha", self.alpha, 0.0, strict=True)
        check_number("--lora-dropout", self.dropout, 0.0, below=1.0)
        if self.targets != ALL_LINEAR:
            try:
                re.compile(self.targets)
            except re.error as exc:
                raise InputError(f"--lora-targets {self.targets!r} is not a valid regex ({exc})") from None


@dataclass(frozen=True)
class TrainConfig:
    out: str  # run directory: checkpoints, exported weights, samples, logs
    dataset: str = "Xiaoyan667/SIGMA-dataset"  # HF dataset id, a parquet file or a folder of them
    model: str = "bagel"  # starting weights (SIGMA post-trains BAGEL-7B-MoT); any --model the loader takes
    init: str = INITS[0]  # weights: start from --model's weights | random: its architecture, freshly initialised
    steps: int = 30_000  # also the length of the cosine schedule (the release: 30 000)
    max_tokens: int = 30_000  # tokens packed into one step's sequence (per GPU)
    max_tokens_per_sample: int = 30_000
    lr: float = 2e-5
    min_lr: float = 1e-7
    warmup: int = 0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-15
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema: float = 0.9999  # 0 turns EMA off
    optimizer: str = "adamw"  # one of OPTIMIZERS
    timestep_shift: float | None = None  # None: the model config's train_timestep_shift (BAGEL's 1.0); saved there
    drop_text: float = 0.1
    drop_vae: float = 0.3
    drop_vit: float = 0.3
    text_loss: bool = False  # add next-token cross-entropy on the instruction text
    ce_weight: float = 1.0
    # > 0: training-only heads read per-token labels (label_sets) off latent tokens after layer label_layer
    # (rows whose meta gives them: finetune.labels, model.shapes.labels); their cross-entropy, times this, is added
    label_weight: float = 0.0
    label_layer: int = 1
    label_sets: tuple[str, ...] = REFERENCE_SETS  # which of model.shapes.labels.HEADS (drawn, drawn-colour: target's)
    # all: every weight of the ViT-less model (the release); gen: the generation expert and its glue layers.
    # Modes that freeze the token embeddings (gen, LoRA) still train the 15 SIGMA attribute-token rows.
    trainable: str = "all"
    lora: LoRAConfig | None = None
    group_mask: bool = False
    group_mask_scope: str = MASK_SCOPE  # with group_mask: eq. 9 as written, or Fig. 2's intent (model.config.MASK_ARMS)
    attribute_projection: bool = False
    # keep BAGEL's ViT and train it: each reference is also read by it into the understanding expert, as BAGEL trains
    # (SIGMA's release trains without it: visual_und False; the ViT slots of the trained layout are then zeros)
    vit: bool = False
    held_out: float = 0.05  # fraction of every task family kept out of training (sample prompts come from it)
    # rows per shuffle window: each epoch reads the row groups in a seeded order and permutes the rows of every window
    # of at least this many (held in memory, encoded: ten row groups of 1 000, as `write_parquet` writes them, so a
    # dataset written one task family per file is mixed); 0 reads the files in order, unshuffled
    shuffle_rows: int = 10_000
    family_weights: dict[str, float] = field(default_factory=dict)
    # family -> its rows' own timestep shift, in place of timestep_shift (a shift > 1 draws that family's noise levels
    # nearer pure noise, where the sampler's first predictions decide what a picture shows)
    family_shifts: dict[str, float] = field(default_factory=dict)
    save_every: int = 500
    keep: int = 2  # checkpoints kept on disk
    sample_every: int = 0  # 0: no sample images
    sample_prompts: int = 2
    sample_steps: int = 20
    log_every: int = 10
    seed: int = 4396
    resume: bool = False
    gradient_checkpointing: bool = True
    # several ranks (FSDP): each reads only its rows of the weights file after sharding; False: every rank loads
    # the whole float32 model first (about 57 GB per rank at 7B)
    sharded_load: bool = True
    bf16: bool = True  # autocast on CUDA (float32 master weights); the CPU always runs float32
    tensorboard: bool = True
    wandb: bool = False
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE:
            raise InputError(f"--train {self.trainable} is not one of {', '.join(TRAINABLE)}")
        check_mask_scope(self.group_mask_scope, f"--group-mask-scope {self.group_mask_scope}")
        if self.init not in INITS:
            raise InputError(f"--init {self.init} is not one of {', '.join(INITS)}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"--optimizer {self.optimizer} is not one of {', '.join(OPTIMIZERS)}")
        self._check_numbers()
        if self.optimizer == "prodigy" and self.lr > MAX_PRODIGY_LR:
            raise InputError(f"--lr {self.lr:g} is above {MAX_PRODIGY_LR:g}: with --optimizer prodigy it multiplies "
                             "the step size Prodigy estimates, and 1.0 is its usual value")  # fmt: skip
        if self.optimizer == "adamw" and self.lr > MAX_LR:
            raise InputError(
                f"--lr {self.lr:g} is above {MAX_LR:g}, where training only diverges: pass at most {MAX_LR:g} "
                "(the release uses 2e-5 for the full model; small models and LoRA take up to about 1e-3)"
            )
        if self.min_lr > self.lr:
            raise InputError(f"--min-lr {self.min_lr} is above --lr {self.lr}: the schedule decays from --lr to it")
        if self.max_tokens_per_sample > self.max_tokens:
            object.__setattr__(self, "max_tokens_per_sample", self.max_tokens)

    def _check_numbers(self) -> None:
        """Every numeric option in range, before anything is loaded (``--lr -1`` would train backwards)."""
        for name in ("steps", "max_tokens", "max_tokens_per_sample", "log_every", "keep", "sample_prompts"):
            check_int(_option(name), getattr(self, name), 1)
        for name in ("warmup", "save_every", "sample_every", "shuffle_rows"):
            check_int(_option(name), getattr(self, name), 0)
        check_int("--seed", self.seed, 0, MAX_SEED)
        check_int("--sample-steps", self.sample_steps, 2, MAX_STEPS)
        for name in ("lr", "eps", "grad_clip", "timestep_shift"):
            if getattr(self, name) is not None:
                check_number(_option(name), getattr(self, name), 0.0, strict=True)
        check_int("--label-layer", self.label_layer, 0)
        object.__setattr__(self, "label_sets", tuple(self.label_sets))  # a list from JSON or a caller
        unknown = [name for name in self.label_sets if name not in HEADS]
        if unknown or not self.label_sets or len(set(self.label_sets)) != len(self.label_sets):
            raise InputError(f"--label-sets {','.join(self.label_sets)}: give one or more of {', '.join(HEADS)}, "
                             "each once")  # fmt: skip
        for name in ("min_lr", "weight_decay", "ce_weight", "label_weight"):
            check_number(_option(name), getattr(self, name), 0.0)
        for name in ("held_out", "drop_text", "drop_vae", "drop_vit", "ema"):
            check_number(_option(name), getattr(self, name), 0.0, below=1.0)
        if len(self.betas) != 2:
            raise InputError(f"--betas takes two numbers (got {self.betas!r})")
        for beta in self.betas:
            check_number("--betas", beta, 0.0, below=1.0)
        for family, weight in self.family_weights.items():
            check_number(f"--family-weight {family}", weight, 0.0)
        for family, shift in self.family_shifts.items():
            check_number(f"--family-shift {family}", shift, 0.0, strict=True)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class WorldRecipe:
    """What the recipes that train a world's model here share (``sigma shapes train``, ``sigma sigmagen train``):
    the run folder, the seed and the MoT's optimiser schedule. A recipe subclasses it and may change a default."""

    out: str = "runs/world"
    seed: int = 0
    max_tokens: int = 768  # tokens packed per step (small packs spend less on the packed sequence's dense attention)
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup: int = 200
    ema: float = 0.995
    save_every: int = 500
    shuffle_rows: int = 1_000_000  # a world's rows are small: one window, the whole dataset permuted every epoch

    def schedule(self, **fields) -> TrainConfig:
        """A TrainConfig with this schedule: the whole model trained with SIGMA's attribute projection, no
        held-out split, two checkpoints kept, no activation checkpointing or TensorBoard; ``fields`` add the rest
        (and win over these)."""
        base = dict(
            max_tokens=self.max_tokens, max_tokens_per_sample=self.max_tokens, lr=self.lr, min_lr=self.min_lr,
            warmup=self.warmup, ema=self.ema, save_every=self.save_every, shuffle_rows=self.shuffle_rows,
            trainable="all", attribute_projection=True, held_out=0.0, keep=2, gradient_checkpointing=False,
            tensorboard=False,
        )  # fmt: skip
        return TrainConfig(**{**base, **fields})

    # settings a resumed run folder may change: its place, and (for the shapes recipe) a longer schedule
    RESUMABLE_CHANGES = ("out",)

    def to_json(self) -> dict:
        """The settings as JSON values (tuples become lists), as ``recipe.json`` stores them."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def check_same_run(self) -> None:
        """Refuse to continue a run folder made with other settings: its rows, autoencoder and checkpoints were made
        with the ones its ``recipe.json`` records. A folder made before a field existed counts as made with that
        field's default (an old folder resumed with a new option set is refused, not silently accepted)."""
        path = Path(self.out) / "recipe.json"
        if not path.is_file():
            return
        before = {**type(self)().to_json(), **json.loads(path.read_text())}
        now = self.to_json()
        changed = sorted(k for k in now if k not in self.RESUMABLE_CHANGES and before.get(k) != now[k])
        if changed:
            raise InputError(
                f"{self.out} holds a run made with other settings ({', '.join(f'{k}={before[k]}' for k in changed)}); "
                "pass the same options to resume it, or another --out"
            )
