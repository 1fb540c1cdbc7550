"""``sigma finetune``: options -> TrainConfig -> Trainer, with a Rich progress bar (loss, lr, tokens/s, ETA)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sigma_studio.finetune.config import (
    ALL_LINEAR,
    DEFAULT_RECIPE,
    INITS,
    OPTIMIZERS,
    RECIPES,
    TRAINABLE,
    LoRAConfig,
    TrainConfig,
)
from sigma_studio.model.config import GROUP_MASK_SCOPES
from sigma_studio.model.errors import InputError
from sigma_studio.model.files import check_output_dir

from . import render
from .groups import grouped
from .options import DebugOpt

# The CLI declares no default of its own: each option's default is its config field's, and choices come from
# the config's tuples.
_D = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
_LORA = LoRAConfig()
TextLossOpt = Annotated[
    bool,
    typer.Option(
        metavar="",
        help="add cross-entropy on the instruction text and train the text head (a row's plan is always "
        "trained: think mode)",
    ),  # fmt: skip
]
LabelWeightOpt = Annotated[
    float,
    typer.Option(
        help="weight of training-only heads that read what a row's pictures show off their tokens, from its meta "
        "(the shapes world's rows; which labels: --label-sets); 0: off"
    ),
]
_INIT_HELP = f"{' | '.join(INITS)}: --model's weights, or its architecture freshly initialised from --seed"
_TRAIN_HELP = f"{' | '.join(TRAINABLE)}: every weight, or the generation branch (and the attribute-token rows)"
InitOpt = Annotated[str, typer.Option(help=_INIT_HELP)]
TrainOpt = Annotated[str, typer.Option("--train", help=_TRAIN_HELP)]
GroupMaskOpt = Annotated[bool, typer.Option("--group-mask/--no-group-mask", metavar="", help="SIGMA group-scoped mask")]
ScopeOpt = Annotated[
    str,
    typer.Option(help=f"{' | '.join(GROUP_MASK_SCOPES)}: what the group mask lets an attribute token see (eq. 9 as "
                      "written, or also its own image: Fig. 2's intent)"),
]  # fmt: skip
AttributeOpt = Annotated[bool, typer.Option(metavar="", help="learn SIGMA's attribute vectors")]
VIT_HELP = (
    "keep --model's ViT and train it: each reference is also read by it into the understanding expert, as "
    "BAGEL trains (SIGMA's release trains without it)"
)
CheckpointingOpt = Annotated[bool, typer.Option(metavar="", help="recompute activations in backward")]
ShardedLoadOpt = Annotated[
    bool,
    typer.Option(
        "--sharded-load/--full-load",
        metavar="",
        help="torchrun: each rank reads only its shard of the weights (--full-load: the whole model first)",
    ),
]
RecipeOpt = Annotated[
    str, typer.Option(help=f"{' | '.join(RECIPES)}: the released scripts' choices, or the SIGMA paper's (see below)")
]


def _per_family(values: list[str], option: str = "--family-weight", example: str = "edit=2") -> dict[str, float]:
    """``FAMILY=NUMBER`` options, repeatable, as a dict."""
    out = {}
    for v in values:
        name, _, w = v.partition("=")
        try:
            out[name] = float(w)
        except ValueError:
            raise InputError(f"{option} '{v}' should be FAMILY=NUMBER, e.g. {example}") from None
    return out


@dataclass(frozen=True)
class ScheduleOptions:
    """How long and how fast: the optimiser schedule."""

    steps: Annotated[int, typer.Option(help="optimizer steps (and the cosine's length)")] = _D["steps"]
    max_tokens: Annotated[int, typer.Option(help="tokens packed per step and GPU")] = _D["max_tokens"]
    lr: Annotated[float, typer.Option(help="peak learning rate (cosine to --min-lr)")] = _D["lr"]
    min_lr: Annotated[float, typer.Option(help="final learning rate")] = _D["min_lr"]
    warmup: Annotated[int, typer.Option(help="linear warm-up steps")] = _D["warmup"]
    shuffle_rows: Annotated[
        int, typer.Option(help="rows each shuffle window permutes, every epoch (0: the files in order)")
    ] = _D["shuffle_rows"]
    optimizer: Annotated[
        str, typer.Option(help=f"{' | '.join(OPTIMIZERS)} (prodigy: --lr multiplies the step it estimates; try 1.0)")
    ] = _D["optimizer"]

    def fields(self) -> dict:
        return dataclasses.asdict(self) | {"max_tokens_per_sample": self.max_tokens}


@dataclass(frozen=True)
class LoRAOptions:
    """LoRA adapters instead of the weights."""

    lora: Annotated[bool, typer.Option(metavar="", help="train LoRA adapters instead of the weights")] = False
    lora_rank: Annotated[int, typer.Option(help="LoRA rank")] = _LORA.rank
    lora_alpha: Annotated[float, typer.Option(help="LoRA alpha")] = _LORA.alpha
    lora_targets: Annotated[str, typer.Option(help=f"{ALL_LINEAR} | a regex of module names")] = _LORA.targets

    def config(self) -> LoRAConfig | None:
        return LoRAConfig(rank=self.lora_rank, alpha=self.lora_alpha, targets=self.lora_targets) if self.lora else None


@dataclass(frozen=True)
class NetworkOptions:
    """What the network reads: SIGMA's group mask and attribute vectors, BAGEL's ViT."""

    group_mask: GroupMaskOpt = _D["group_mask"]
    group_mask_scope: ScopeOpt = _D["group_mask_scope"]
    attribute_projection: AttributeOpt = _D["attribute_projection"]
    vit: Annotated[bool, typer.Option(metavar="", help=VIT_HELP)] = _D["vit"]

    def fields(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LossOptions:
    """What the loss adds to the flow matching."""

    timestep_shift: Annotated[
        float | None,
        typer.Option(
            help="shift of the noise levels training draws (t = sigmoid(N(0, 1)), then shifted as the sampler's "
            "schedule is): 1 centres them on t = 0.5; above 1 trains more at high noise \\[default: the model "
            "config's train_timestep_shift, BAGEL's 1.0; the shift used is saved there]",
            show_default=False,
        ),
    ] = _D["timestep_shift"]
    text_loss: TextLossOpt = _D["text_loss"]
    label_weight: LabelWeightOpt = _D["label_weight"]
    label_layer: Annotated[int, typer.Option(help="the layer whose output --label-weight's heads read")] = _D[
        "label_layer"
    ]
    label_sets: Annotated[
        str,
        typer.Option(
            help="--label-weight's label sets, comma-separated: shape and named (the references' tokens), drawn "
            "and drawn-colour (the target's shape and colour on every token being drawn), scene and scene-colour "
            "(SIGMA-GEN: the shape and colour of the subject covering each target token)"
        ),
    ] = ",".join(_D["label_sets"])

    def fields(self) -> dict:
        sets = tuple(name.strip() for name in self.label_sets.split(",") if name.strip())
        return dataclasses.asdict(self) | {"label_sets": sets}


@grouped
def finetune(
    *,
    out: Annotated[Path, typer.Option("--out", "-o", help="run directory (checkpoints, samples, logs)")],
    dataset: Annotated[str, typer.Option(help="HF dataset id, parquet file or folder")] = _D["dataset"],
    model: Annotated[str, typer.Option("--model", "-m", help="starting weights")] = _D["model"],
    init: InitOpt = _D["init"],
    recipe: RecipeOpt = DEFAULT_RECIPE,
    schedule: ScheduleOptions,
    train: TrainOpt = _D["trainable"],
    lora: LoRAOptions,
    network: NetworkOptions,
    losses: LossOptions,
    ema: Annotated[float, typer.Option(help="EMA decay (0 = off)")] = _D["ema"],
    held_out: Annotated[float, typer.Option(help="fraction of each task family held out")] = _D["held_out"],
    family_weight: Annotated[list[str] | None, typer.Option(help="FAMILY=WEIGHT, repeatable")] = None,
    family_shift: Annotated[
        list[str] | None,
        typer.Option(help="FAMILY=SHIFT, repeatable: that family's rows draw their noise levels at this shift"),
    ] = None,
    save_every: Annotated[int, typer.Option(help="checkpoint every N steps")] = _D["save_every"],
    sample_every: Annotated[int, typer.Option(help="sample images every N steps (0 = never)")] = _D["sample_every"],
    resume: Annotated[bool, typer.Option(metavar="", help="continue the run in --out")] = _D["resume"],
    seed: Annotated[int, typer.Option(help="seed of every random draw")] = _D["seed"],
    gradient_checkpointing: CheckpointingOpt = _D["gradient_checkpointing"],
    sharded_load: ShardedLoadOpt = _D["sharded_load"],
    wandb: Annotated[bool, typer.Option(metavar="", help="also log to Weights & Biases")] = _D["wandb"],
    cache_dir: Annotated[str | None, typer.Option(help="Hugging Face cache folder")] = _D["cache_dir"],
    debug: DebugOpt = False,
    ctx: typer.Context = None,  # (typer passes it: which options were given on the command line)
) -> None:
    """Post-train SIGMA on interleaved data (full or LoRA; one GPU, CPU, or torchrun + FSDP2).

    --recipe release (the default) is the released scripts' choices, which produced the released weights; --recipe
    paper is the SIGMA paper's: the generation branch only, 50 000 steps, W_tau and the group mask on. An option
    given on the command line wins over the recipe.
    """
    from sigma_studio.finetune.data import check_family_options
    from sigma_studio.model.data.dataset import parquet_files
    from sigma_studio.model.hub import HubOptions

    render.setup_logging(debug)
    with render.errors(debug):
        cfg = TrainConfig(**_with_recipe(recipe, ctx, dict(
            out=str(out), dataset=dataset, model=model, init=init, **schedule.fields(), trainable=train,
            lora=lora.config(), **network.fields(), **losses.fields(), ema=ema, held_out=held_out,
            family_weights=_per_family(family_weight or []),
            family_shifts=_per_family(family_shift or [], "--family-shift", "select=10"),
            save_every=save_every, sample_every=sample_every, resume=resume, seed=seed,
            gradient_checkpointing=gradient_checkpointing, sharded_load=sharded_load, wandb=wandb, cache_dir=cache_dir,
        )))  # fmt: skip
        check_output_dir(out)  # before the progress bar and the model load: a bad --out is one line
        # likewise a missing or unreachable dataset, or a --family-weight of a family it does not hold
        files = parquet_files(dataset, HubOptions(cache_dir=cache_dir))
        check_family_options(cfg.family_weights, cfg.family_shifts, files)
        trainer, run_dir = _train(cfg)
    if trainer.dist.main:
        _report(trainer.stats, run_dir)


def _report(stats, run_dir) -> None:
    render.stdout.print(
        f"[green]✓[/] {run_dir}  (load it with --model {run_dir})  rows {stats.rows}, used {stats.used}, "
        f"skipped {stats.bad} bad and {stats.too_long} too long"
    )


def _with_recipe(recipe: str, ctx: typer.Context | None, fields: dict) -> dict:
    """``fields`` with the recipe's values for every option the command line did not give."""
    if recipe not in RECIPES:
        raise InputError(f"--recipe {recipe} is not one of {', '.join(RECIPES)}")
    option = {"trainable": "train"}  # TrainConfig field -> the CLI parameter that sets it
    for name, value in RECIPES[recipe].items():
        source = ctx.get_parameter_source(option.get(name, name)) if ctx is not None else None
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):  # not on the command line
            fields[name] = value
    return fields


def _train(cfg: TrainConfig):
    """Run the Trainer under a Rich progress bar (loss, lr, tokens/s, skipped rows, ETA)."""
    from sigma_studio.finetune.trainer import Trainer

    with Progress(
        TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=render.console,
    ) as bar:  # fmt: skip
        task = bar.add_task("train", total=cfg.steps, info="")

        def on_step(s) -> None:
            labels = f" · labels {s.label:.3f}" if s.label is not None else ""
            info = (
                f"loss {s.loss:.4f}{labels} · lr {s.lr:.2e} · {s.tokens_per_s:,.0f} tok/s · skipped rows {s.stats.bad}"
            )
            bar.update(task, completed=s.step, info=info)

        trainer = Trainer(cfg, on_step)
        return trainer, trainer.run()
