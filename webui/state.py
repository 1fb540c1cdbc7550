"""PURE prompt <-> reference-slot synchronisation for the web UI (no Gradio here; unit-tested on its own).

Slot k (0-based) is image ``img{k+1}``. The prompt text and the slots never disagree:

* choosing attribute tokens for a slot rewrites the tokens right in front of that slot's placeholder (and adds the
  placeholder at the end of the prompt if it is missing);
* editing the prompt re-reads every slot's tokens from the text (the tokens bound to its first placeholder);
* adding an image to an empty slot appends its placeholder; removing a slot deletes its placeholders and their
  tokens and renumbers the slots after it; moving a slot swaps the numbers in the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from model.errors import PromptError
from model.prompt import ANGLE_TOKEN_RE, PLACEHOLDER_RE, ImagePart, parse_prompt
from model.tokens import ATTRIBUTE_TOKENS

MAX_SLOTS = 6
_TOKENS_BEFORE = r"((?:<(?:" + "|".join(t[1:-1] for t in ATTRIBUTE_TOKENS) + r")>\s*)*)"


@dataclass(frozen=True)
class Slot:
    image: str | None = None  # file path of the uploaded image
    tokens: tuple[str, ...] = ()

    @property
    def filled(self) -> bool:
        return self.image is not None


@dataclass(frozen=True)
class UIState:
    prompt: str = ""
    slots: tuple[Slot, ...] = field(default_factory=lambda: (Slot(),))
    error: str = ""

    def names(self) -> list[str]:
        return [f"img{k + 1}" for k in range(len(self.slots))]


def _placeholder_re(n: int) -> re.Pattern:
    return re.compile(_TOKENS_BEFORE + r"(<\s*(?:img|image)[\s_]*" + str(n) + r"\s*>)", re.IGNORECASE)


def set_tokens(state: UIState, k: int, tokens: list[str]) -> UIState:
    """Slot k's dropdown changed: rewrite the tokens in front of its first placeholder."""
    tokens = tuple(t for t in ATTRIBUTE_TOKENS if t in tokens)  # canonical order, unknown values dropped
    pat = _placeholder_re(k + 1)
    prefix = "".join(tokens) + (" " if tokens else "")
    if pat.search(state.prompt):
        prompt = pat.sub(lambda m: prefix + m.group(2), state.prompt, count=1)
    else:
        prompt = f"{state.prompt.rstrip()} {prefix}<img{k + 1}>".strip()
    slots = list(state.slots)
    slots[k] = replace(slots[k], tokens=tokens)
    return replace(state, prompt=prompt, slots=tuple(slots), error="")


def read_prompt(state: UIState, prompt: str) -> UIState:
    """The prompt was edited: every slot takes the tokens bound to its first placeholder in the text."""
    try:
        parsed = parse_prompt(prompt, len(state.slots))
    except PromptError as exc:
        return replace(state, prompt=prompt, error=str(exc))
    first: dict[int, tuple[str, ...]] = {}
    for part in parsed.parts:
        if isinstance(part, ImagePart) and part.placeholder is not None and part.index not in first:
            first[part.index] = tuple(t for t in ATTRIBUTE_TOKENS if t in part.attributes)
    slots = tuple(replace(s, tokens=first.get(k, ())) for k, s in enumerate(state.slots))
    return replace(state, prompt=prompt, slots=slots, error="")


def set_image(state: UIState, k: int, image: str | None) -> UIState:
    """An image was uploaded into (or cleared from) slot k; a newly filled slot gets its placeholder."""
    slots = list(state.slots)
    slots[k] = replace(slots[k], image=image)
    new = replace(state, slots=tuple(slots))
    if image is not None and not _placeholder_re(k + 1).search(state.prompt):
        new = replace(new, prompt=f"{state.prompt.rstrip()} <img{k + 1}>".strip())
    return new


def add_slot(state: UIState) -> UIState:
    if len(state.slots) >= MAX_SLOTS:
        return replace(state, error=f"At most {MAX_SLOTS} reference images")
    return replace(state, slots=(*state.slots, Slot()), error="")


def _renumber(prompt: str, mapping: dict[int, int]) -> str:
    def sub(m: re.Match) -> str:
        n = int(m.group(1))
        return f"<img{mapping[n]}>" if n in mapping else m.group(0)

    return PLACEHOLDER_RE.sub(sub, prompt)


def remove_slot(state: UIState, k: int) -> UIState:
    """Delete slot k, its placeholders and their tokens; later slots move up one number."""
    prompt = _placeholder_re(k + 1).sub("", state.prompt)
    prompt = re.sub(r"\s{2,}", " ", prompt).strip()
    mapping = {n: n - 1 for n in range(k + 2, len(state.slots) + 1)}
    slots = state.slots[:k] + state.slots[k + 1 :] or (Slot(),)
    return replace(state, prompt=_renumber(prompt, mapping), slots=slots, error="")


def move_slot(state: UIState, k: int, delta: int) -> UIState:
    """Swap slot k with slot k+delta, and the two numbers in the prompt."""
    j = k + delta
    if not 0 <= j < len(state.slots):
        return state
    slots = list(state.slots)
    slots[k], slots[j] = slots[j], slots[k]
    return replace(state, prompt=_renumber(state.prompt, {k + 1: j + 1, j + 1: k + 1}), slots=tuple(slots), error="")


@dataclass(frozen=True)
class PreviewItem:
    kind: str  # "text" | "image"
    text: str = ""
    image: str | None = None
    name: str = ""
    tokens: tuple[str, ...] = ()


def preview(state: UIState, extra: dict[str, str] | None = None) -> list[PreviewItem]:
    """The interleaved sequence the model will receive, in order (``extra``: name -> path of control images)."""
    filled = {name: s.image for name, s in zip(state.names(), state.slots, strict=True) if s.filled}
    images = filled | (extra or {})
    names = list(images)
    parsed = parse_prompt(state.prompt, len(names), names=[int(n[3:]) for n in names])
    items = []
    for part in parsed.parts:
        if isinstance(part, ImagePart):
            name = names[part.index]
            items.append(PreviewItem("image", image=images[name], name=name, tokens=part.attributes))
        else:
            items.append(PreviewItem("text", text=part.text))
    return items


def unknown_tokens(prompt: str) -> list[str]:
    return [t for t in ANGLE_TOKEN_RE.findall(prompt) if t not in ATTRIBUTE_TOKENS and not PLACEHOLDER_RE.fullmatch(t)]
