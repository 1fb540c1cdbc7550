"""A short `sigma finetune` run from a fresh initialisation moves the shapes world's pixel metric above chance.

The run starts from the shipped model's architecture, tokenizer and autoencoder with freshly initialised weights
(``init="random"``), trains on the text family only for a couple of minutes of CPU, and is scored on held-out
(shape, colour) pairs: the colour of "a <colour> <shape>" must come out right far more often than the 1 in 8 that
a guess gets (its shape takes thousands of steps: the learning curve in docs/SHAPES.md).
"""

from __future__ import annotations

from pathlib import Path

from sigma_studio.finetune.config import TrainConfig
from sigma_studio.finetune.trainer import Trainer
from sigma_studio.model import GenerationConfig, load_pipeline
from sigma_studio.model.data.dataset import write_parquet
from sigma_studio.model.hub import shipped_shapes_model
from sigma_studio.model.shapes.evaluate import evaluate_pipeline
from sigma_studio.model.shapes.tasks import examples

STEPS = 150
CHANCE = 1 / 8  # a guessed colour is right one time in eight, a guessed (shape, colour) one in 48


def test_a_short_run_learns_colours_beyond_chance(tmp_path: Path):
    write_parquet(tmp_path / "data" / "text.parquet", examples("text", "train", 600, seed=5))
    write_parquet(tmp_path / "eval" / "text.parquet", examples("text", "eval", 16, seed=5))
    cfg = TrainConfig(
        out=str(tmp_path / "run"), dataset=str(tmp_path / "data"), model=str(shipped_shapes_model()), init="random",
        steps=STEPS, max_tokens=768, lr=2e-3, min_lr=1e-4, warmup=20, ema=0.0, held_out=0.0, save_every=STEPS,
        group_mask=True, attribute_projection=True, seed=1, gradient_checkpointing=False, tensorboard=False,
    )  # fmt: skip
    run = Trainer(cfg).run()
    pipe = load_pipeline(str(run))
    summary, _ = evaluate_pipeline(pipe, str(tmp_path / "eval"), config=GenerationConfig(steps=20))
    text = summary["text"]
    # measured here: colour 94 % (a guess: 12.5 %). Shapes come much later at 8 x 8 tokens a picture: 6 % here, 15 %
    # of text rows after 2 500 steps of the full recipe, 98 % after 12 000 (docs/SHAPES.md, learning curve)
    assert text["colour"] >= 4 * CHANCE, summary
