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
    start: Annotated[str, typer.Argument(help="the model the finetune started from: any --model value but tiny")],
    finetuned: Annotated[Path, typer.Argument(help="a `sigma finetune` run, a checkpoint, or a model folder")],
    out: Annotated[Path, typer.Option("--out", "-o", help="a new folder for the averaged model")],
    weight: Annotated[float, typer.Option(help="the finetune's share, from 0 (START) to 1 (FINETUNED)")] = (
        AVERAGE_WEIGHT
    ),
    cache_dir: CacheOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Average a finetune with the model it started from, weight by weight (WiSE-FT: it keeps much of what the
    finetune gained and of what it forgot; docs/SHAPES.md's recipe makes the shipped shapes model so).

    The result has FINETUNED's configs, tokenizer, autoencoder and dtype; START's tensors that FINETUNED has not
    (the ViT a finetune dropped) are left out. It needs about the memory of that one model."""
    from sigma_studio.finetune.checkpoint import average_models
    from sigma_studio.model.files import check_output_dir
    from sigma_studio.model.hub import HubOptions, resolve

    render.setup_logging(debug)
    with render.errors(debug):
        if not 0.0 <= weight <= 1.0:
            raise InputError(f"--weight {weight:g}: give the finetune's share, a number from 0 to 1")
        check_output_dir(out)
        check_new(out)
        late = model_folder(finetuned)
        if start.lower() == "tiny":
            raise InputError("START tiny is built with random weights: there is nothing to average it with")
        early = resolve(start, HubOptions(cache_dir=cache_dir), option="START")
        check_new(out)  # again: START may have taken minutes to download
        made = average_models(early.weights or early.config_dir, late, weight, out)
    render.stdout.print(
        f"[green]✓[/] {escape(str(made))}  (load it with --model {escape(str(made))}): {1 - weight:g} of "
        f"{escape(start)}, {weight:g} of {escape(str(late))}",
        soft_wrap=True,  # (whole paths, to copy)
    )


def check_new(out: Path) -> None:
    """Refuse an --out that holds anything: the average never replaces a finetune or another model."""
    if out.is_dir() and any(out.iterdir()):
        raise InputError(f"--out {out} already holds files: pass a new folder, so that nothing is replaced")


def model_folder(finetuned: Path) -> Path:
    """FINETUNED's model folder (a run's newest checkpoint), which must hold configs, weights and autoencoder."""
    from sigma_studio.finetune.checkpoint import latest_checkpoint
    from sigma_studio.model.hub import weights_in

    if not finetuned.is_dir():
        raise InputError(f"FINETUNED {finetuned}: no such folder; pass a `sigma finetune` run or checkpoint folder")
    folder = latest_checkpoint(finetuned) or finetuned
    if not all((folder / name).is_file() for name in ("llm_config.json", "ae.safetensors")) or not weights_in(folder):
        raise InputError(
            f"FINETUNED {folder} is not a whole model folder: pass a finetune's run or checkpoint folder, which "
            "has its configs, weights, tokenizer and autoencoder side by side"
        )
    return folder
