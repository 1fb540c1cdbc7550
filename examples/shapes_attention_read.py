"""Where does the drawing look? Attention of the picture being drawn onto a select row's reference, head by head.

    python examples/shapes_attention_read.py MODEL DATA [ROWS]

MODEL: a model folder or name (``shapes``, the shipped one); DATA: a folder of parquet rows, e.g. the held-out
``runs/probe/eval/eval``; ROWS: how many select rows to read (default 100).

Select draws the named shape in another object's colour, while the reference's own tokens know which object the
words name (docs/SHAPES.md, "Labels on the reference's tokens"). If the drawing's queries put little of their
attention on the named object's tokens, the colour is not fetched; one suspect is the q/k normalisation, which caps
a logit at sqrt(head size) max|g_q| max|g_k| (about 5.7 at unit gains and head size 32, against 11.3 at BAGEL's 128).

For every layer and query head it prints, averaged over the rows and over the target's latent tokens at t = 1 (pure
noise: where the first prediction decides) and at t = 0.5, the share of attention on the named object's tokens, on
the other objects', on the reference's background, on the words, on the target itself and on the rest (markers,
slots); the named object's share per token against the other objects' (how much sharper than uniform over the
objects); the largest single weight; and the largest logit against the cap its gains allow.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict

import torch

from sigma_studio.finetune.data import DropConfig, build_sample
from sigma_studio.finetune.packing import pack
from sigma_studio.model import load_pipeline
from sigma_studio.model.data.dataset import SigmaRow, parquet_files, read_group, row_groups
from sigma_studio.model.run import packed
from sigma_studio.model.run.attention import PackedAttention

PARTS = ("named", "others", "background", "words", "target", "rest")


class Recorder(PackedAttention):
    """The training forward's attention, which also keeps each layer's softmax weights and logits of some queries."""

    def __init__(self, mask: torch.Tensor, queries: torch.Tensor, store: dict):
        super().__init__(mask)
        self.queries, self.store = queries, store

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        heads, kv = q.shape[1], k.shape[1]
        qs = q[self.queries].float().transpose(0, 1)  # [H, nq, hd]
        ks = k.float().repeat_interleave(heads // kv, dim=1).transpose(0, 1)  # [H, n, hd]
        logits = qs @ ks.transpose(1, 2) / math.sqrt(q.shape[-1])
        logits = logits.masked_fill(~self.mask[self.queries].to(q.device), float("-inf"))
        self.store[layer] = (logits.softmax(-1), logits)
        return super().__call__(layer, q, k, v)


def caps(model) -> list[list[float]]:
    """Per layer and query head: a bound on the picture expert's logit, sqrt(d) max|g_q| max|g_k| (a normed q or k
    has length sqrt(d) before its gains)."""
    out = []
    for layer in model.language_model.model.layers:
        a = layer.self_attn
        gq, gk = a.q_norm_moe_gen.weight.float(), a.k_norm_moe_gen.weight.float()
        out.append([float(gq.abs().max() * gk.abs().max() * math.sqrt(gq.numel()))] * a.num_heads)
    return out


@torch.no_grad()
def read(pipe, data: str, rows: int, raw_t: float) -> dict[tuple[int, int], dict[str, float]]:
    model, arch = pipe.model, pipe.model.cfg
    g = torch.Generator().manual_seed(0)
    sums: dict[tuple[int, int], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    seen = 0
    for unit in row_groups(parquet_files(data)):
        for row in read_group(unit):
            if seen >= rows or not isinstance(row, SigmaRow) or not row.row_id.startswith("select"):
                continue
            sample = build_sample(row, arch, pipe.tokenizer, g, DropConfig(0, 0, 0), raw_timestep=raw_t,
                                  labels=("named", "shape"))  # fmt: skip
            batch = pack([sample], arch, pipe.tokenizer.ids, arch.group_mask, arch.group_mask_scope)
            vae = batch.packed_vae_token_indexes
            named, shape = sample.labels[0]["named"], sample.labels[0]["shape"]
            ref, target = vae[: named.numel()], vae[named.numel() :]
            part = torch.full((batch.sequence_length,), PARTS.index("rest"))
            part[batch.packed_text_indexes] = PARTS.index("words")
            part[target] = PARTS.index("target")
            part[ref] = torch.where(named == 1, 0, torch.where(shape > 0, 1, 2))
            store: dict = {}
            original = packed.PackedAttention
            packed.PackedAttention = lambda mask, store=store, target=target: Recorder(mask, target, store)
            try:
                latent = pipe.vae.encode(batch.padded_images, generator=g)
                noise = torch.randn((vae.numel(), arch.patch_latent_dim), generator=g)
                packed.packed_forward(model, batch, latent, noise, 1.0)
            finally:
                packed.PackedAttention = original
            counts = torch.bincount(part, minlength=len(PARTS)).float()
            for layer, (weights, logits) in store.items():
                for h in range(weights.shape[0]):
                    w, s = weights[h], sums[(layer, h)]
                    share = torch.zeros(len(PARTS)).index_add_(0, part, w.sum(0)) / w.shape[0]
                    for name, x in zip(PARTS, share.tolist(), strict=True):
                        s[name] += x
                    if counts[0] and counts[1]:
                        s["per-token ratio"] += float((share[0] / counts[0]) / (share[1] / counts[1]))
                        s["ratio rows"] += 1
                    s["max weight"] += float(w.max(-1).values.mean())
                    s["max logit"] = max(s["max logit"], float(logits[torch.isfinite(logits)].max()))
            seen += 1
    for s in sums.values():
        s["per-token ratio"] /= max(1.0, s.pop("ratio rows", 0.0))
        for name in (*PARTS, "max weight"):
            s[name] /= max(1, seen)
    return sums


def main() -> None:
    model, data = sys.argv[1], sys.argv[2]
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    pipe = load_pipeline(model)
    pipe.model.eval()
    cap = caps(pipe.model)
    for label, raw_t in (("t = 1", float("inf")), ("t = 0.5", 0.0)):
        print(f"\n{label}: layer head | {' '.join(PARTS)} | named/others per token | max weight | max logit / cap")
        for (layer, h), s in sorted(read(pipe, data, rows, raw_t).items()):
            shares = " ".join(f"{s[p]:.3f}" for p in PARTS)
            logit = f"{s['max logit']:.2f} / {cap[layer][h]:.2f}"
            print(f"  {layer} {h} | {shares} | {s['per-token ratio']:.2f} | {s['max weight']:.3f} | {logit}")


if __name__ == "__main__":
    main()
