"""Can a shapes model name what a picture shows? Teacher-forced next-word accuracy on fresh describe rows.

    python examples/shapes_describe_read.py shapes runs/probe/select-shipped-describe/model
    python examples/shapes_describe_read.py --held-out runs/probe/select-shipped-describe/model

For each model: 300 describe rows (``model.shapes.tasks``, world seed 99, training pairs, none of them a row the
probes trained on), the words after the picture read with every earlier word given, as ``--text-loss`` trains them.
A shape word is right when the model's most likely next token is that shape (the leftmost object's shape is read
from the picture alone); a colour word when it is the colour of the shape just named. Colours are counted apart
for pictures of one object (any colour seen will do) and of two or three (the colour of the one named: the binding
select needs). The shipped model never trained its text head on these words, so it reads 0 % here. ``--held-out``
draws the rows of the evaluation split instead: every object a held-out pair, never seen in training.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter

import torch

from sigma_studio.finetune.data import DropConfig, build_sample
from sigma_studio.finetune.packing import pack
from sigma_studio.model.data.dataset import iter_rows, parquet_files, write_parquet
from sigma_studio.model.run.packed import packed_forward
from sigma_studio.model.shapes.tasks import COLOUR_NAMES, examples, make_world
from sigma_studio.model.shapes.world import SHAPES
from sigma_studio.model.weights.loader import load_pipeline

ROWS, SEED, BATCH = 300, 99, 20


def word_ids(tokenizer) -> dict[int, str]:
    """Each shape and colour word as the one token it is in a sentence (with its leading space)."""
    out = {}
    for word in (*SHAPES, *COLOUR_NAMES):
        ids = tokenizer.encode(" " + word)
        if len(ids) == 1:
            out[ids[0]] = word
    return out


def read(source: str, rows: list) -> Counter:
    pipe = load_pipeline(source)
    model, tok, vae, arch = pipe.model.float().eval(), pipe.tokenizer, pipe.vae, pipe.model.cfg
    words = word_ids(tok)
    tally: Counter = Counter()
    g = torch.Generator().manual_seed(0)
    for start in range(0, len(rows), BATCH):
        chunk = rows[start : start + BATCH]
        samples = [build_sample(r, arch, tok, g, DropConfig(0, 0, 0), raw_timestep=0.0, text_loss=True) for r in chunk]
        batch = pack(samples, arch, tok.ids, group_mask=True)
        with torch.no_grad():
            latent = vae.encode(batch.padded_images, generator=g)
            noise = torch.randn((batch.packed_vae_token_indexes.numel(), arch.patch_latent_dim), generator=g)
            out = model(packed_forward, batch, latent, noise, 1.0)
        predicted = out.ce_logits.argmax(-1).tolist()
        # the labels run row by row, each row's colour words one per object: a colour word's picture holds as
        # many objects as its row names
        objects = iter([n for r in chunk for n in [r.instruction.count(" is ")] * r.instruction.count(" is ")])
        for label, guess in zip(batch.packed_label_ids.tolist(), predicted, strict=True):
            word = words.get(label)
            if word is None:
                continue
            if word in SHAPES:
                kind = "shape"
            else:
                kind = "colour, 1 object" if next(objects) == 1 else "colour, 2-3 objects"
            tally[kind, "n"] += 1
            tally[kind, "right"] += guess == label
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model directories, or shapes for the shipped model")
    parser.add_argument("--held-out", action="store_true", help="every object a held-out pair")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.held_out:
            write_parquet(f"{tmp}/describe.parquet", examples("describe", "eval", ROWS, SEED))
            rows = list(iter_rows(parquet_files(tmp)))
        else:
            make_world(tmp, rows=10, eval_rows=2, seed=SEED, auxiliary={"describe": ROWS})
            rows = [r for r in iter_rows(parquet_files(tmp + "/train")) if r.row_id.startswith("describe")]
        for source in args.models:
            tally = read(source, rows)
            kinds = ("shape", "colour, 1 object", "colour, 2-3 objects")
            shares = {kind: (tally[kind, "right"], tally[kind, "n"]) for kind in kinds}
            figures = ", ".join(f"{kind} {r}/{n} ({r / max(1, n):.0%})" for kind, (r, n) in shares.items())
            print(f"{source}: {figures}")


if __name__ == "__main__":
    main()
