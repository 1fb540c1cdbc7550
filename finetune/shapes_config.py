"""The settings of ``sigma shapes train`` (:mod:`finetune.shapes_recipe`): one frozen dataclass, each default
declared once, checked before anything is written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sigma_studio.model.config import MASK_SCOPE, MAX_SEED
from sigma_studio.model.errors import InputError
from sigma_studio.model.presets import shapes
from sigma_studio.model.shapes.labels import HEADS, REFERENCE_SETS

from .config import TrainConfig, WorldRecipe, check_int, check_number
from .sigmagen_recipe import STAGES, SigmaGenRecipe, Stage

# The decoder finetune's pictures: targets of fresh training rows (seed + 2), this share of them a family; background's
# coloured canvases are 7 % of the MoT's rows and what the base autoencoder reconstructs worst.
DECODER_MIX: dict[str, float] = {"background": 0.5, "compose": 0.125, "select": 0.125, "layout": 0.125, "text": 0.125}
# The background stage's rows: every family's fresh rows, background's trained on this many times as often (its
# rows are 10 % of the world's mix and the fewest of any kind; docs/SHAPES.md, "Background weighed up"), drawn at
# world seed recipe.seed + BALANCE_SEED (the shipped MoT's rows are seed 0's, its decoder's seed 2's).
BALANCE_WEIGHTS: dict[str, float] = {"background": 5.0}
BALANCE_SEED = 11
BALANCE_WARMUP = 100
# With --balance-boxed-rows, the training-only boxed family's rows (a named shape drawn filling a layout box: docs/
# SHAPES.md, "Drawing in a box") beside them, trained on this many times as often as a family at weight 1.
BALANCE_BOXED_WEIGHT = 3.0
# With --balance-label-weight, the label sets its training-only heads read off the tokens being drawn (the target's
# shape and colour; SIGMA-GEN's, the subject covering each token: model.shapes.labels), after this layer.
BALANCE_LABEL_SETS: tuple[str, ...] = ("drawn", "drawn-colour", "scene", "scene-colour")
BALANCE_LABEL_LAYER = 2
# --balance-labels: which tokens those heads read. "drawn": the sets above; "reference": each select and background
# reference token's shape and whether it is the object the words name (model.shapes.labels.REFERENCE_SETS), after
# layer 1, as the probes that moved select read them (docs/SHAPES.md, "Select's rows at the noise levels ...").
BALANCE_LABELS: dict[str, tuple[tuple[str, ...], int]] = {
    "drawn": (BALANCE_LABEL_SETS, BALANCE_LABEL_LAYER),
    "reference": (REFERENCE_SETS, 1),
}
# With --balance-family-shift, these families' rows draw their noise levels at that timestep shift in the background
# stage: the two whose first predictions decide what a reference gives (select's colour, layout's shape).
SHIFTED_FAMILIES: tuple[str, ...] = ("select", "layout")
# With --label-weight, the MoT's training-only heads read every label set from its first step (model.shapes.labels:
# the select and background references' shapes and select's named object, the one-object target's shape and colour,
# each SIGMA-GEN subject's), after this layer: the levers of docs/SHAPES.md's probes, where the heads and the drawing
# learn together instead of a finetune's random heads pulling on a trained model.
LABEL_LAYER = 2


@dataclass(frozen=True)
class ShapesRecipe(WorldRecipe):
    out: str = "runs/shapes"
    rows: int = 20_000  # training rows (split over the families by model.shapes.tasks.MIX)
    eval_rows: int = 40  # held-out rows per family
    sigmagen_rows: int = 8000  # SIGMA-GEN training rows: 2-5 subjects by 2-D box, 3-D box, mask or mask + depth
    sigmagen_eval: int = 25  # held-out SIGMA-GEN scenes per subject count (2, 3, 4, 5)
    ae_steps: int = 2400
    ae_images: int = 8000  # distinct pictures the autoencoder trains on, drawn from every family and SIGMA-GEN
    steps: int = 12_000  # optimizer steps of the MoT model
    max_tokens: int = 1024  # about six rows of 8 x 8-token pictures a step
    lr: float = 7e-4
    decoder_steps: int = 1000  # the decoder finetune's steps (0: none)
    decoder_rows: int = 4800  # the decoder finetune's pictures, split by DECODER_MIX
    decoder_lr: float = 3e-4
    drop_text: float = 0.1
    drop_vae: float = 0.1
    drop_vit: float = 0.3
    group_mask: bool = True
    group_mask_scope: str = MASK_SCOPE  # with group_mask: eq. 9 as written, or Fig. 2's intent (MASK_ARMS)
    attribute_tokens: bool = True  # False: the ablation's neutral word instead of each attribute token
    base: str | None = None  # reuse this base directory (autoencoder and tokenizer) instead of training one
    curriculum_weight: float = 0.5  # the shipped weights: this share of SIGMA-GEN's curriculum finetune (0: none)
    curriculum_replay: float = 0.5  # share of SIGMA's five families among the curriculum's rows
    curriculum: tuple[Stage, ...] = STAGES  # its stages, as `sigma sigmagen train` runs them
    boxed_rows: int = 0  # the training-only boxed family's rows in the MoT's data (0: none)
    fair_distractors: bool = False  # select's training scenes: no distractor in a colour held out with the named shape
    offcentre: float = 0.0  # share of compose's and layout's training rows whose reference's object stands anywhere
    label_weight: float = 0.0  # the MoT's label heads' weight, from its first step (0: no heads)
    balance_steps: int = 3000  # the background stage's finetune of the curriculum's average (0: none)
    balance_rows: int = 100_000  # its fresh rows of the five families, each trained on about once
    balance_sigmagen_rows: int = 20_000  # and SIGMA-GEN's, so that it keeps them (none in a run without them)
    balance_lr: float = 3e-4
    balance_weight: float = 0.5  # model/: this share of the background stage's finetune, the rest its start
    balance_boxed_rows: int = 0  # boxed rows beside the background stage's (0: none)
    balance_label_weight: float = 0.0  # the background stage's label heads' weight (0: no heads)
    balance_labels: str = "drawn"  # what those heads read: one of BALANCE_LABELS
    balance_family_shift: float = 0.0  # SHIFTED_FAMILIES' rows' own timestep shift in that stage (0: the run's)

    # a finished or stopped run may be continued on a longer schedule (refused once its curriculum has started:
    # check_curriculum_start), and its averages redone with another weight
    RESUMABLE_CHANGES = ("out", "steps", "curriculum_weight", "balance_weight")

    def __post_init__(self) -> None:
        """Every option checked before anything is written (``--steps 0`` used to write the world's data first)."""
        check_int("--rows", self.rows, 10)
        check_int("eval_rows", self.eval_rows, 2)
        check_int("--ae-steps", self.ae_steps, 1)
        check_int("--sigmagen-rows", self.sigmagen_rows, 0)
        check_int("sigmagen_eval", self.sigmagen_eval, 0)
        check_int("--seed", self.seed, 0, MAX_SEED)
        check_int("--decoder-steps", self.decoder_steps, 0)
        check_int("decoder_rows", self.decoder_rows, len(DECODER_MIX))
        check_number("decoder_lr", self.decoder_lr, 0.0, strict=True)
        check_number("--curriculum-replay", self.curriculum_replay, 0.0, below=1.0)
        check_int("--boxed-rows", self.boxed_rows, 0)
        check_number("--offcentre", self.offcentre, 0.0, at_most=1.0)
        check_number("--label-weight", self.label_weight, 0.0)
        check_int("--balance-steps", self.balance_steps, 0)
        check_int("balance_rows", self.balance_rows, 10)
        check_int("balance_sigmagen_rows", self.balance_sigmagen_rows, 0)
        check_int("--balance-boxed-rows", self.balance_boxed_rows, 0)
        check_number("--balance-label-weight", self.balance_label_weight, 0.0)
        if self.balance_labels not in BALANCE_LABELS:
            raise InputError(f"--balance-labels {self.balance_labels}: choose {' or '.join(BALANCE_LABELS)}")
        check_number("--balance-family-shift", self.balance_family_shift, 0.0)
        for name, weight in (
            ("--curriculum-weight", self.curriculum_weight),
            ("--balance-weight", self.balance_weight),
        ):
            check_number(name, weight, 0.0)
            if weight > 1:
                raise InputError(f"{name} is a share, from 0 (none of the finetune) to 1 (all of it; got {weight})")
        if not self.attribute_tokens and self.with_curriculum:  # its replayed SIGMA rows carry their tokens
            raise InputError(
                "--no-attribute-tokens trains the ablation's token-free arm on SIGMA's families, but SIGMA-GEN's "
                "curriculum replays them with their tokens: add --sigmagen-rows 0 or --curriculum-weight 0"
            )
        self.train_config()  # the finetune's own checks (--steps, the learning rates, ...)
        if self.with_balance:
            self.balance_config(Path(self.out) / "average")

    @property
    def base_dir(self) -> Path:
        return Path(self.base) if self.base else Path(self.out) / "base"

    @property
    def skills(self) -> tuple[str, ...]:
        """What the model is trained to read, stored with it: the shapes preset's skills less SIGMA-GEN's subjects
        without their rows and the attribute tokens in the ablation's token-free arm (so that model is warned of)."""
        trained = {"subjects": self.sigmagen_rows > 0, "attribute_tokens": self.attribute_tokens}
        return tuple(s for s in shapes().skills if trained.get(s, True))

    @property
    def with_curriculum(self) -> bool:
        return self.curriculum_weight > 0 and self.sigmagen_rows > 0

    @property
    def with_balance(self) -> bool:
        return self.balance_steps > 0 and self.balance_weight > 0

    @property
    def stage_outputs(self) -> dict[str, Path]:
        """Where each model-making stage writes (the MoT's export, the curriculum's average, the background stage's
        average); the last one that runs writes ``model/``, what ships."""
        last = "balance" if self.with_balance else "average" if self.with_curriculum else "mot"
        return {
            stage: Path(self.out) / ("model" if stage == last else stage) for stage in ("mot", "average", "balance")
        }

    def balance_config(self, start: Path) -> TrainConfig:
        """The background stage's finetune of ``start`` (the settings of docs/SHAPES.md's probes: the finetune's
        default condition dropout, EMA 0.995)."""
        out = Path(self.out)
        sets, layer = BALANCE_LABELS[self.balance_labels]
        shifts = dict.fromkeys(SHIFTED_FAMILIES, self.balance_family_shift) if self.balance_family_shift else {}
        return self.schedule(
            out=str(out / "balance"), dataset=str(out / "data" / "balance" / "train"), model=str(start),
            init="weights", steps=self.balance_steps, lr=self.balance_lr, warmup=BALANCE_WARMUP,
            group_mask=self.group_mask, group_mask_scope=self.group_mask_scope,
            family_weights=BALANCE_WEIGHTS | ({"boxed": BALANCE_BOXED_WEIGHT} if self.balance_boxed_rows else {}),
            label_weight=self.balance_label_weight, label_sets=sets, label_layer=layer, family_shifts=shifts,
            seed=self.seed, resume=(out / "balance" / "latest").is_file(),
        )  # fmt: skip

    def curriculum_recipe(self) -> SigmaGenRecipe:
        """SIGMA-GEN's curriculum from this run's MoT (``mot/``), with SIGMA's rows replayed; no decoder stage of its
        own (the model keeps the recipe's decoder); its held-out scenes as many a subject count as this run's."""
        out = Path(self.out)
        return CurriculumRecipe(
            out=str(out / "curriculum"), model=str(out / "mot"), stages=self.curriculum, replay=self.curriculum_replay,
            decoder_steps=0, seed=self.seed, eval_rows=max(1, self.sigmagen_eval),
        )  # fmt: skip

    def train_config(self) -> TrainConfig:
        out = Path(self.out)
        return self.schedule(
            out=str(out / "train"), dataset=str(out / "data" / "train"), model=str(self.base_dir), init="random",
            steps=self.steps, group_mask=self.group_mask, group_mask_scope=self.group_mask_scope,
            drop_text=self.drop_text, drop_vae=self.drop_vae, drop_vit=self.drop_vit, seed=self.seed,
            label_weight=self.label_weight, label_layer=LABEL_LAYER, label_sets=tuple(HEADS),
            resume=(out / "train" / "latest").is_file(),
        )  # fmt: skip


class CurriculumRecipe(SigmaGenRecipe):
    """SIGMA-GEN's curriculum inside a shapes run: it starts from the run's own ``mot/`` wherever the run folder is,
    so a moved (or otherwise spelt) run folder resumes it."""

    RESUMABLE_CHANGES = ("out", "model")


Report = Callable[[str, str], None]
