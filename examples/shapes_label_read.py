"""Read a labelled run's heads (``sigma finetune --label-weight``) on rows it never trained on: does the model know,
in the reference's own tokens, which object the words name, and (the ``drawn`` and ``drawn-colour`` sets) in the
tokens it draws, what shape and colour it is drawing?

    python examples/shapes_label_read.py RUN DATA [DATA ...]

RUN: the run folder (its latest checkpoint: the EMA weights, what the run exports, and the heads it saved).
DATA: folders of parquet rows, e.g. ``runs/probe/eval/eval`` (held-out pairs) and ``runs/probe/seen/eval``
(training pairs in new rows). For each, prints per family and label set the token accuracy; over select rows the
share of the named object's tokens read as named (recall) and of the tokens read as named that are (precision),
and the share of rows whose most-named token lies on the named object (the object found); with the drawn sets, the
share of rows whose target tokens' majority reads the target's shape or colour (read from pure noise: what the
conditions alone tell the drawing); with the scene sets (SIGMA-GEN rows), the token accuracy on the tokens a subject
covers.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

from sigma_studio.finetune.config import TrainConfig
from sigma_studio.finetune.data import DropConfig, build_sample
from sigma_studio.finetune.labels import LabelHeads
from sigma_studio.finetune.packing import pack
from sigma_studio.model import load_pipeline
from sigma_studio.model.data.dataset import SigmaRow, parquet_files, read_group, row_groups
from sigma_studio.model.run.packed import packed_forward
from sigma_studio.model.shapes.labels import DRAWN_SETS, SCENE_SETS


@torch.no_grad()
def read(pipe, heads: LabelHeads, data: Path, sets: tuple[str, ...]) -> dict[str, float]:
    model, arch = pipe.model, pipe.model.cfg
    g = torch.Generator().manual_seed(0)
    right: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    named_hits = named_total = said_named = found = rows = 0
    for unit in row_groups(parquet_files(str(data))):
        for row in read_group(unit):
            if not isinstance(row, SigmaRow):
                continue
            sample = build_sample(row, arch, pipe.tokenizer, g, DropConfig(0, 0, 0), labels=sets)
            if not sample.labels:
                continue
            batch = pack([sample], arch, pipe.tokenizer.ids, arch.group_mask, arch.group_mask_scope)
            latent = pipe.vae.encode(batch.padded_images, generator=g)
            noise = torch.randn((batch.packed_vae_token_indexes.numel(), arch.patch_latent_dim), generator=g)
            packed_forward(model, batch, latent, noise, 1.0)
            for name, (logits, classes) in heads.read([sample], torch.device("cpu")).items():
                guess = logits.argmax(-1)
                tally = right[f"{sample.family} {name} token accuracy"]
                tally[0], tally[1] = tally[0] + int((guess == classes).sum()), tally[1] + len(classes)
                if name in SCENE_SETS:  # the tokens a subject covers (most of a scene's are background)
                    on = classes > 0
                    tally = right[f"{sample.family} {name}, subjects' tokens"]
                    tally[0], tally[1] = tally[0] + int((guess == classes)[on].sum()), tally[1] + int(on.sum())
                if name in DRAWN_SETS:
                    rows_read = right[f"{sample.family} {name}, rows read right"]
                    rows_read[0] += int(guess.mode().values == classes[0])
                    rows_read[1] += 1
                if name == "named":
                    named_hits += int(((guess == 1) & (classes == 1)).sum())
                    named_total += int((classes == 1).sum())
                    said_named += int((guess == 1).sum())
                    found += int(classes[logits.softmax(-1)[:, 1].argmax()] == 1)
                    rows += 1
    out: dict[str, float] = {k: hit / max(1, n) for k, (hit, n) in sorted(right.items())}
    if rows:
        out |= {
            "named recall": named_hits / max(1, named_total),
            "named precision": named_hits / max(1, said_named),
            "object found": found / rows,
            "select rows": rows,
        }
    return out


def main() -> None:
    run, folders = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
    checkpoint = run / (run / "latest").read_text().strip()
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    pipe = load_pipeline(str(checkpoint))
    pipe.model.eval()
    saved = state["config"]
    sets = tuple(saved.get("label_sets", TrainConfig.label_sets))  # a run from before --label-sets: the default's
    cfg = TrainConfig(out=str(run), label_weight=1.0, label_layer=saved["label_layer"], label_sets=sets)
    heads = LabelHeads(pipe.model, cfg, torch.device("cpu"))
    heads.load(checkpoint)
    for folder in folders:
        figures = read(pipe, heads, folder, sets)
        print(folder, "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
