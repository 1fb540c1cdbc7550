"""Sample pictures during a finetune (``--sample-every``): a few rows' prompts drawn by the model being trained."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from sigma_studio.model.data.dataset import SigmaRow
from sigma_studio.model.images import save_png
from sigma_studio.model.run.pipeline import SigmaPipeline


def sample_prompts(rows: Iterable[tuple[object, object]], count: int) -> list[SigmaRow]:
    """The first ``count`` readable rows of a (position, row) stream; a bad row is skipped here as in training."""
    out = []
    for _, row in rows:
        if isinstance(row, SigmaRow) and row.readable():
            out.append(row)
        if len(out) >= count:
            break
    return out


@torch.no_grad()
def write_samples(trainer, rows: list[SigmaRow], out: Path) -> None:
    """Draw each row's prompt with the trainer's model (``trainer.cfg.sample_steps`` steps, seed = its index) into
    ``out/step-NNNNNN-K.png``; the model is put back in the mode it was in."""
    from sigma_studio.model.data.batch import row_prompt

    model = trainer.model
    was_training = model.training
    model.eval()
    pipe = SigmaPipeline(model, trainer.vae, trainer.tokenizer, device=trainer.dist.device, name="training")
    for k, row in enumerate(rows):
        images = row.decode_images()
        prompt = row_prompt(row, len(images))
        result = model(  # through the root forward: sharded weights are gathered unit by unit
            lambda _m, p=prompt, refs=images[:-1], k=k: pipe(
                p, refs, steps=trainer.cfg.sample_steps, seed=k, layout="trained"
            )
        )
        if trainer.dist.main:
            save_png(result.image, out / f"step-{trainer.step:06d}-{k}.png")
    model.train(was_training)
