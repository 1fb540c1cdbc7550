"""Training configuration: one dataclass per concern; ``sigma finetune`` options map onto these fields."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from sigma_studio.model.config import INITS  # --init choices: defined once, with LoaderConfig
from sigma_studio.model.errors import InputError

TRAINABLE = ("all", "gen")  # --train choices (LoRA ignores it)
ALL_LINEAR = "all-linear"


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = 8
    alpha: float = 32.0
    dropout: float = 0.05
    # "all-linear" (the release's option: every nn.Linear of the model except the output layer lm_head),
    # or a regex that the names of the adapted linear layers match in full
    targets: str = ALL_LINEAR

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise InputError(f"--lora-rank must be at least 1 (got {self.rank})")
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
    init: str = "weights"  # weights: start from --model's weights | random: its architecture, freshly initialised
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
    timestep_shift: float = 1.0
    drop_text: float = 0.1
    drop_vae: float = 0.3
    drop_vit: float = 0.3
    text_loss: bool = False  # add next-token cross-entropy on the instruction text
    ce_weight: float = 1.0
    # all: every weight of the ViT-less model (the release); gen: the generation expert and its glue layers.
    # Modes that freeze the token embeddings (gen, LoRA) still train the 15 SIGMA attribute-token rows.
    trainable: str = "all"
    lora: LoRAConfig | None = None
    group_mask: bool = False
    attribute_projection: bool = False
    held_out: float = 0.05  # fraction of every task family kept out of training (sample prompts come from it)
    family_weights: dict[str, float] = field(default_factory=dict)
    save_every: int = 500
    keep: int = 2  # checkpoints kept on disk
    sample_every: int = 0  # 0: no sample images
    sample_prompts: int = 2
    sample_steps: int = 20
    log_every: int = 10
    seed: int = 4396
    resume: bool = False
    gradient_checkpointing: bool = True
    bf16: bool = True  # autocast on CUDA (float32 master weights); the CPU always runs float32
    tensorboard: bool = True
    wandb: bool = False
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE:
            raise InputError(f"--train {self.trainable} is not one of {', '.join(TRAINABLE)}")
        if self.init not in INITS:
            raise InputError(f"--init {self.init} is not one of {', '.join(INITS)}")
        if self.steps < 1:
            raise InputError(f"--steps must be at least 1 (got {self.steps})")
        if not 0 <= self.held_out < 1:
            raise InputError(f"--held-out must be in [0, 1) (got {self.held_out})")
        for name in ("drop_text", "drop_vae", "drop_vit"):
            if not 0 <= getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be in [0, 1)")
        if self.max_tokens_per_sample > self.max_tokens:
            object.__setattr__(self, "max_tokens_per_sample", self.max_tokens)
        if not 0 <= self.ema < 1:
            raise InputError(f"--ema must be in [0, 1) (got {self.ema})")

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)
