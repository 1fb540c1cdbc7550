"""The special-token table (data, defined once) and tokenizer loading.

BAGEL wraps every text segment in ``<|im_start|> ... <|im_end|>`` and every image block in
``<|vision_start|> ... <|vision_end|>``. SIGMA adds 15 attribute tokens, appended in this exact order as
ordinary (non-special) added tokens, so with the shipped Qwen2.5 tokenizer they get ids 151665..151679.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError

BOS, EOS, SOI, EOI = "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"

ATTRIBUTE_TOKENS: tuple[str, ...] = (
    "<style>",
    "<subject>",
    "<id>",
    "<icon>",
    "<text>",
    "<pose>",
    "<layout>",
    "<perspective>",
    "<lighting>",
    "<background>",
    "<environment>",
    "<emotion>",
    "<clothing>",
    "<texture>",
    "<select>",
)

# Words people write in angle brackets for what an attribute token means: "Did you mean" goes by meaning first,
# then by spelling (<colour> is not spelt like <style>, but colour is what <style> carries).
TOKEN_MEANINGS: dict[str, str] = {
    **dict.fromkeys(("colour", "color", "colours", "colors", "palette", "painting", "art", "look"), "<style>"),
    **dict.fromkeys(("object", "thing", "animal", "item", "product", "character"), "<subject>"),
    **dict.fromkeys(("face", "person", "identity", "man", "woman", "people", "portrait"), "<id>"),
    **dict.fromkeys(("logo", "symbol", "emblem"), "<icon>"),
    **dict.fromkeys(("font", "typography", "words", "caption", "lettering"), "<text>"),
    **dict.fromkeys(("posture", "gesture", "stance", "body"), "<pose>"),
    **dict.fromkeys(("composition", "arrangement", "boxes", "box", "position", "placement"), "<layout>"),
    **dict.fromkeys(("angle", "view", "viewpoint", "camera"), "<perspective>"),
    **dict.fromkeys(("light", "lights", "illumination", "shadow", "shadows"), "<lighting>"),
    **dict.fromkeys(("backdrop", "bg", "scenery"), "<background>"),
    **dict.fromkeys(("place", "location", "setting", "weather", "surroundings"), "<environment>"),
    **dict.fromkeys(("mood", "expression", "feeling", "emotions"), "<emotion>"),
    **dict.fromkeys(("clothes", "outfit", "dress", "garment", "wear", "costume"), "<clothing>"),
    **dict.fromkeys(("material", "surface", "fabric", "pattern"), "<texture>"),
    **dict.fromkeys(("choose", "pick", "choice", "selection"), "<select>"),
}  # fmt: skip


def suggest_token(token: str) -> str | None:
    """The attribute token an unknown ``<word>`` most likely means: by meaning (:data:`TOKEN_MEANINGS`), else by
    spelling; None when nothing is close."""
    word = token.strip().strip("<>").strip().lower()
    if word in TOKEN_MEANINGS:
        return TOKEN_MEANINGS[word]
    import difflib

    close = difflib.get_close_matches(f"<{word}>", ATTRIBUTE_TOKENS, n=1)
    return close[0] if close else None


ATTRIBUTE_HELP: dict[str, str] = {
    "<style>": "artistic style: brushwork, palette, medium",
    "<subject>": "a subject (object or animal) to place in the scene",
    "<id>": "a person's identity: the face",
    "<icon>": "an icon or logo",
    "<text>": "text or typography to render",
    "<pose>": "body pose",
    "<layout>": "spatial layout: edges, depth or boxes",
    "<perspective>": "camera viewpoint",
    "<lighting>": "lighting",
    "<background>": "the background",
    "<environment>": "the surrounding environment",
    "<emotion>": "facial expression or mood",
    "<clothing>": "clothing and outfit",
    "<texture>": "surface texture or material",
    "<select>": "select one part of the image (with a description of which)",
}

# The Qwen2.5 control tokens, in id order, that follow the BPE vocabulary (151643..151664 in the real model).
QWEN_CONTROL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)


@dataclass(frozen=True)
class TokenIds:
    bos: int
    eos: int
    start_of_image: int
    end_of_image: int
    attributes: tuple[int, ...]  # ids of ATTRIBUTE_TOKENS, same order

    def attribute_index(self, token_id: int) -> int | None:
        """Position 0..14 of an attribute token id, or None."""
        try:
            return self.attributes.index(token_id)
        except ValueError:
            return None


class Tokenizer:
    """A Qwen2 byte-level BPE tokenizer with the BAGEL markers and SIGMA's attribute tokens registered."""

    def __init__(self, hf_tokenizer):
        self._tok = hf_tokenizer
        missing = [t for t in (BOS, EOS, SOI, EOI) if t not in hf_tokenizer.get_vocab()]
        if missing:
            hf_tokenizer.add_special_tokens({"additional_special_tokens": missing})
        vocab = hf_tokenizer.get_vocab()
        hf_tokenizer.add_tokens([t for t in ATTRIBUTE_TOKENS if t not in vocab])
        vocab = hf_tokenizer.get_vocab()
        self.ids = TokenIds(
            bos=vocab[BOS],
            eos=vocab[EOS],
            start_of_image=vocab[SOI],
            end_of_image=vocab[EOI],
            attributes=tuple(vocab[t] for t in ATTRIBUTE_TOKENS),
        )

    def __len__(self) -> int:
        return len(self._tok)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without BOS/EOS."""
        return list(self._tok.encode(text, add_special_tokens=False))

    def segment(self, text: str) -> list[int]:
        """A text segment as the model receives it: ``[bos] + encode(text) + [eos]``."""
        return [self.ids.bos, *self.encode(text), self.ids.eos]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)

    def save(self, directory: str | Path) -> None:
        """Write the tokenizer files (attribute tokens included) into ``directory``."""
        self._tok.save_pretrained(str(directory))

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return self._tok.convert_ids_to_tokens(ids)

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        from transformers import Qwen2Tokenizer

        path = Path(path)
        if (
            not ((path / "vocab.json").is_file() and (path / "merges.txt").is_file())
            and not (path / "tokenizer.json").is_file()
        ):
            raise CheckpointError(
                f"No tokenizer in {path}: expected vocab.json and merges.txt (or tokenizer.json) from the "
                "BAGEL-7B-MoT repository"
            )
        try:
            return cls(Qwen2Tokenizer.from_pretrained(str(path)))
        except Exception as exc:  # noqa: BLE001 - transformers and tokenizers raise many types for a damaged file
            reason = f"no entry {exc}" if isinstance(exc, KeyError) else (str(exc) or repr(exc)).splitlines()[0]
            raise CheckpointError(
                f"The tokenizer in {path} cannot be read ({reason}); re-download or re-save the checkpoint"
            ) from None

    @classmethod
    def byte_level(cls) -> Tokenizer:
        """A tokenizer with no merges (one token per byte) plus the control tokens: for the ``tiny`` model."""
        from transformers import Qwen2Tokenizer
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
        tok = Qwen2Tokenizer(vocab=vocab, merges=[])
        tok.add_special_tokens({"additional_special_tokens": list(QWEN_CONTROL_TOKENS)})
        return cls(tok)
