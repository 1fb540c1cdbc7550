"""``sigma finetune``: options -> TrainConfig -> Trainer, with a Rich progress bar (loss, lr, tokens/s, ETA)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import render


def _family_weights(values: list[str]) -> dict[str, float]:
    out = {}
    for v in values:
        name, _, w = v.partition("=")
        try:
            out[name] = float(w)
        except ValueError:
            raise typer.BadParameter(
                f"'{v}' should be FAMILY=WEIGHT, e.g. edit=2", param_hint="--family-weight"
            ) from None
    return out


def finetune(
    out: Annotated[Path, typer.Option("--out", "-o", help="run directory (checkpoints, samples, logs)")],
    dataset: Annotated[str, typer.Option(help="HF dataset id, parquet file or folder")] = "Xiaoyan667/SIGMA-dataset",
    model: Annotated[str, typer.Option("--model", "-m", help="starting weights")] = "bagel",
    steps: Annotated[int, typer.Option(help="optimizer steps")] = 1000,
    max_tokens: Annotated[int, typer.Option(help="tokens packed per step and GPU")] = 30_000,
    lr: Annotated[float, typer.Option(help="peak learning rate (cosine to --min-lr)")] = 2e-5,
    min_lr: Annotated[float, typer.Option(help="final learning rate")] = 1e-7,
    warmup: Annotated[int, typer.Option(help="linear warm-up steps")] = 100,
    train: Annotated[str, typer.Option("--train", help="gen (generation branch) | all")] = "gen",
    lora: Annotated[bool, typer.Option(help="train LoRA adapters instead of the weights")] = False,
    lora_rank: Annotated[int, typer.Option(help="LoRA rank")] = 8,
    lora_alpha: Annotated[float, typer.Option(help="LoRA alpha")] = 32.0,
    lora_targets: Annotated[str | None, typer.Option(help="regex of module names to adapt")] = None,
    group_mask: Annotated[bool, typer.Option("--group-mask/--no-group-mask", help="SIGMA group-scoped mask")] = False,
    attribute_projection: Annotated[bool, typer.Option(help="learn SIGMA's attribute vectors")] = False,
    text_loss: Annotated[bool, typer.Option(help="add cross-entropy on the instruction text")] = False,
    ema: Annotated[float, typer.Option(help="EMA decay (0 = off)")] = 0.9999,
    held_out: Annotated[float, typer.Option(help="fraction of each task family held out")] = 0.05,
    family_weight: Annotated[list[str] | None, typer.Option(help="FAMILY=WEIGHT, repeatable")] = None,
    save_every: Annotated[int, typer.Option(help="checkpoint every N steps")] = 500,
    sample_every: Annotated[int, typer.Option(help="sample images every N steps (0 = never)")] = 0,
    resume: Annotated[bool, typer.Option(help="continue the run in --out")] = False,
    seed: Annotated[int, typer.Option(help="seed of every random draw")] = 4396,
    gradient_checkpointing: Annotated[bool, typer.Option(help="recompute activations in backward")] = True,
    wandb: Annotated[bool, typer.Option(help="also log to Weights & Biases")] = False,
    cache_dir: Annotated[str | None, typer.Option(help="Hugging Face cache folder")] = None,
    debug: Annotated[bool, typer.Option(help="show tracebacks")] = False,
) -> None:
    """Post-train SIGMA on interleaved data (full or LoRA; one GPU, CPU, or torchrun + FSDP2)."""
    from finetune.config import LoRAConfig, TrainConfig
    from finetune.trainer import Trainer

    render.setup_logging(debug)
    with render.errors(debug):
        lora_cfg = None
        if lora:
            lora_cfg = LoRAConfig(lora_rank, lora_alpha, **({"targets": lora_targets} if lora_targets else {}))
        cfg = TrainConfig(
            out=str(out), dataset=dataset, model=model, steps=steps, max_tokens=max_tokens,
            max_tokens_per_sample=max_tokens, lr=lr, min_lr=min_lr, warmup=warmup, trainable=train, lora=lora_cfg,
            group_mask=group_mask, attribute_projection=attribute_projection, text_loss=text_loss, ema=ema,
            held_out=held_out, family_weights=_family_weights(family_weight or []), save_every=save_every,
            sample_every=sample_every, resume=resume, seed=seed, gradient_checkpointing=gradient_checkpointing,
            wandb=wandb, cache_dir=cache_dir,
        )  # fmt: skip
        with Progress(
            TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=render.console,
        ) as bar:  # fmt: skip
            task = bar.add_task("train", total=steps, info="")

            def on_step(s) -> None:
                info = f"loss {s.loss:.4f} · lr {s.lr:.2e} · {s.tokens_per_s:,.0f} tok/s · skipped rows {s.stats.bad}"
                bar.update(task, completed=s.step, info=info)

            trainer = Trainer(cfg, on_step)
            run_dir = trainer.run()
    if trainer.dist.main:
        stats = trainer.stats
        render.stdout.print(
            f"[green]✓[/] {run_dir}  (load it with --model {run_dir})  rows {stats.rows}, used {stats.used}, "
            f"skipped {stats.bad} bad and {stats.too_long} too long"
        )
