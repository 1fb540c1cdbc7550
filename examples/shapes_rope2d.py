"""A probe: image tokens with two-dimensional rotary positions (docs/SHAPES.md, "Rotary positions in two dimensions").

BAGEL gives every token of an image one RoPE position: inside a picture attention sees no offset, and where a token
stands comes only from the sin-cos table added to its input. This probe splits the rotary frequencies between three
axes, as Qwen2-VL's M-RoPE does, interleaved (frequency j goes to axis j mod 3, so every axis has a fast and a slow
one): the sequence position, the row and the column. A text token has all three at its position, so text rotates as
before; an image's markers stand at the image's position; its latent tokens at (position, position + SCALE * row,
position + SCALE * column). Attention between two tokens of pictures then depends on their offset in rows and
columns, the same wherever the pair stands.

It is a patch of the running process, not a model setting: a model trained with it must be read with it (its config
does not say so). It wraps the `sigma` command line:

    python examples/shapes_rope2d.py finetune ARGS...      # `sigma finetune ARGS...` with the patch on
    python examples/shapes_rope2d.py shapes eval ARGS...   # `sigma shapes eval ARGS...` with it on

(`bash examples/shapes_probe.sh all 3000 shipped rope2d` runs both.) Any other `sigma` command runs under it the same
way: `shapes train ...` trains the recipe with it from the MoT's first step, `sigmagen eval ...` reads SIGMA-GEN
(docs/SHAPES.md, "... from the MoT's first step", gives the commands).
"""

from __future__ import annotations

import sys

import torch

from sigma_studio.model.arch.layers import RotaryEmbedding
from sigma_studio.model.run import engine
from sigma_studio.model.run.sequence import Block

SCALE = 4  # rotary steps a latent row or column (the fast row frequency: 1.7 rad a row at the model's theta)
AXES = 3  # the sequence position, the row, the column
PLAIN = Block.positions  # BAGEL's: one position per image


def block_positions(block: Block) -> list[tuple[int, int, int]]:
    """(position, row axis, column axis) of every token of ``block``."""
    r = block.rope
    if block.kind not in ("vae", "noise"):
        return [(p, p, p) for p in PLAIN(block)]
    h, w = block.grid
    inner = [(r, r + SCALE * (k // w), r + SCALE * (k % w)) for k in range(h * w)]
    return [(r, r, r), *inner, (r, r, r)]


def query_positions(contexts, grid: tuple[int, int], device) -> torch.Tensor:
    """QueryStep's rows: each context's noise tokens, then its two markers."""
    h, w = grid
    k = torch.arange(h * w)
    rows = []
    for c in contexts:
        r = c.next_rope
        rows.append(torch.stack((torch.full_like(k, r), r + SCALE * (k // w), r + SCALE * (k % w)), 1))
    markers = [torch.full((2, AXES), c.next_rope) for c in contexts]
    return torch.cat(rows + markers).to(device)


@torch.no_grad()
def rotary(self: RotaryEmbedding, position_ids: torch.Tensor, dtype: torch.dtype):
    """RotaryEmbedding.forward for [n] positions (every axis the same: plain RoPE) or [n, 3]."""
    inv_freq = self.compute_inv_freq(position_ids.device)
    pos = position_ids.float()
    if pos.dim() == 1:
        pos = pos[:, None].expand(-1, AXES)
    axis = torch.arange(inv_freq.numel(), device=pos.device) % AXES
    freqs = pos[:, axis] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def patch(set_attr=setattr) -> None:
    """Turn the probe on in this process (``set_attr``: a test's ``monkeypatch.setattr``, which undoes it)."""
    plain_init = engine.QueryStep.__init__

    def init(self, model, contexts, grid, *args, **kwargs):
        plain_init(self, model, contexts, grid, *args, **kwargs)
        self.positions = query_positions(contexts, grid, self.positions.device)

    set_attr(Block, "positions", block_positions)
    set_attr(RotaryEmbedding, "forward", rotary)
    set_attr(engine.QueryStep, "__init__", init)


def main() -> None:
    patch()
    from sigma_studio.cli.main import app

    sys.argv = ["sigma", *sys.argv[1:]]
    app(prog_name="sigma")


if __name__ == "__main__":
    main()
