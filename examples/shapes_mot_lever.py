"""The shapes recipe's MoT stage with select's lever from its first step (docs/SHAPES.md, "Select's lever from the
MoT's first step"): the recipe's data at seed 0 drawn with fair distractors, the reference label heads after layer 1
(weight 0.5) and select's and layout's rows at timestep shift 10, on the shipped autoencoder and tokenizer. About 80
minutes on two cores; rerun the same command to resume.

    python examples/shapes_mot_lever.py runs/mot-lfs
    sigma shapes eval --model runs/mot-lfs/mot --per-family 100
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from sigma_studio.finetune.checkpoint import export, trained_steps
from sigma_studio.finetune.shapes_config import SHIFTED_FAMILIES, ShapesRecipe
from sigma_studio.finetune.shapes_stages import make_base, make_data
from sigma_studio.finetune.trainer import Trainer
from sigma_studio.model.hub import shipped_shapes_model
from sigma_studio.model.shapes.labels import REFERENCE_SETS

LABEL_LAYER, SHIFT = 1, 10.0  # as the probes that moved select (--balance-labels reference, --family-shift select=10)


def main(out: Path) -> None:
    recipe = ShapesRecipe(out=str(out), fair_distractors=True, base=str(shipped_shapes_model()), decoder_steps=0,
                          label_weight=0.5)  # fmt: skip
    t0 = time.time()

    def report(stage: str, message: str) -> None:
        print(f"{time.time() - t0:7.0f}s {stage}: {message}", flush=True)

    make_data(recipe)
    report("data", "ready")
    make_base(recipe, report)
    config = dataclasses.replace(recipe.train_config(), label_sets=REFERENCE_SETS, label_layer=LABEL_LAYER,
                                 family_shifts=dict.fromkeys(SHIFTED_FAMILIES, SHIFT))  # fmt: skip

    def on_step(s) -> None:
        if s.step % 200 == 0:
            report("mot", f"step {s.step} of {config.steps}, loss {s.loss:.4f}")

    trained = (out / "train" / "latest").is_file() and trained_steps(out / "train") >= config.steps
    if not trained:
        Trainer(config, on_step).run()
    report("mot", f"{export(out / 'train', out / 'mot', skills=recipe.skills)} written")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/mot-lfs"))
