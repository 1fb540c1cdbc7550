"""The shapes world's tokenizer: byte-level BPE (the Qwen2 format) whose merges are learnt from the world's own
sentences, so that every word of the world is one or two tokens. Deterministic: the same sentences give the
same vocabulary and merges."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from ..request.tokens import QWEN_CONTROL_TOKENS, Tokenizer
from .tasks import FAMILIES, examples

VOCAB_SIZE = 400  # learnt BPE entries (256 bytes + merges); control and attribute tokens come on top


def world_sentences(per_family: int = 400, seed: int = 0) -> list[str]:
    """Instructions of every family with the placeholders removed (what the tokenizer sees between images)."""
    out = []
    for family in FAMILIES:
        for ex in examples(family, "train", per_family, seed):
            out.append(re.sub(r"<image_\d+>", " ", ex.instruction))
    return out


def build_tokenizer(sentences: list[str] | None = None) -> Tokenizer:
    """Learn the merges and return the SIGMA tokenizer (BAGEL markers and attribute tokens registered)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import Qwen2Tokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(sentences or world_sentences(), vocab_size=VOCAB_SIZE, min_frequency=2, show_progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        bpe.save_model(tmp)
        hf = Qwen2Tokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"))
    hf.add_special_tokens({"additional_special_tokens": list(QWEN_CONTROL_TOKENS)})
    return Tokenizer(hf)
