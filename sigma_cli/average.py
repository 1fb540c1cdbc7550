"""``sigma average``: a finetune averaged with the model it started from (WiSE-FT), a thin layer over
``finetune.checkpoint.average_models``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sigma_studio.finetune.checkpoint import AVERAGE_WEIGHT
from sigma_studio.model.errors import InputError

from . import render
from .options import CacheOpt, DebugOpt

EXAMPLES = """Examples:

  sigma average shapes runs/select-finetune --out runs/select-averaged
  sigma average sigma runs/my-finetune --weight 0.3 --out runs/my-finetune-wise
"""


def average(
    start: Annotated[str, typer.Argument(help="the model the finetune started from: any --model value")],
    finetuned: Annotated[Path, typer.Argument(help="a `sigma finetune` run, a checkpoint, or a model folder")],
    out: Annotated[Path, typer.Option(help="a new folder for the averaged model")],
    weight: Annotated[float, typer.Option(help="the finetune's share, from 0 (START) to 1 (FINETUNED)")] = (
        AVERAGE_WEIGHT
    ),
    cache_dir: CacheOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Average a finetune with the model it started from, weight by weight (WiSE-FT: it keeps much of what the
    finetune gained and of what it forgot; docs/SHAPES.md's recipe makes the shipped shapes model so).

    The result has FINETUNED's configs, tokenizer and autoencoder, and needs the memory of one model."""
    from sigma_studio.finetune.checkpoint import average_models
    from sigma_studio.model.hub import HubOptions, resolve

    render.setup_logging(debug)
    with render.errors(debug):
        if not 0.0 <= weight <= 1.0:
            raise InputError(f"--weight {weight:g}: give the finetune's share, a number from 0 to 1")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise InputError(f"--out {out} already holds files: pass a new folder, so that nothing is replaced")
        if not finetuned.is_dir():
            raise InputError(f"FINETUNED {finetuned}: no such folder; pass a `sigma finetune` run or checkpoint folder")
        whole = (finetuned / "llm_config.json").is_file() or (finetuned / "latest").is_file()
        late = resolve(str(finetuned)) if whole else None  # (a folder of bare weights would fetch BAGEL's configs)
        if late is None or late.weights is not None or not (late.config_dir / "ae.safetensors").is_file():
            raise InputError(
                f"{finetuned} is not a whole model folder: pass the finetune's run or checkpoint folder, which has "
                "its configs, tokenizer and autoencoder beside its weights"
            )
        early = resolve(start, HubOptions(cache_dir=cache_dir))
        made = average_models(early.weights or early.config_dir, late.config_dir, weight, out)
    render.stdout.print(
        f"[green]✓[/] {escape(str(made))}  (load it with --model {escape(str(made))}): {1 - weight:g} of "
        f"{escape(start)}, {weight:g} of {escape(str(late.config_dir))}",
        soft_wrap=True,  # (whole paths, to copy)
    )
