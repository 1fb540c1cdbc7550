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

from sigma_studio.model.errors import PromptError
from sigma_studio.model.request.prompt import PLACEHOLDER_RE, ImagePart, parse_prompt
from sigma_studio.model.request.tokens import ATTRIBUTE_TOKENS

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


def _segment_before(prompt: str, n: int) -> tuple[int, int, int] | None:
    """(segment start, placeholder start, placeholder end) of the first ``<img n>``: the segment is the text
    since the previous placeholder, where the parser binds attribute tokens to this image."""
    prev_end = 0
    for m in PLACEHOLDER_RE.finditer(prompt):
        if int(m.group(1)) == n:
            return prev_end, m.start(), m.end()
        prev_end = m.end()
    return None


_TOKEN_IN_TEXT = re.compile("|".join(re.escape(t) for t in ATTRIBUTE_TOKENS))


def set_tokens(state: UIState, k: int, tokens: list[str]) -> UIState:
    """Slot k's dropdown changed: its attribute tokens become exactly ``tokens``.

    The tokens bound to the image are those in the text segment before its first placeholder (the parser's
    rule). The new set takes the place of the first old token (``<style>this painting <img3>``), or goes right
    before the placeholder when the segment had none; a missing placeholder is appended.
    """
    tokens = tuple(t for t in ATTRIBUTE_TOKENS if t in tokens)  # canonical order, unknown values dropped
    joined = "".join(tokens)
    span = _segment_before(state.prompt, k + 1)
    if span is None:
        prompt = f"{state.prompt.rstrip()} {joined + ' ' if joined else ''}<img{k + 1}>".strip()
    else:
        seg_start, ph_start, _ = span
        segment = state.prompt[seg_start:ph_start]
        first = _TOKEN_IN_TEXT.search(segment)
        if first is None:
            base = segment.rstrip()
            space = " " if base or seg_start else ""
            segment = base + (space + joined + " " if joined else space)
        else:
            head, tail = segment[: first.start()], _TOKEN_IN_TEXT.sub("", segment[first.start() :])
            segment = re.sub(r"[ \t]{2,}", " ", head + joined + tail)
        prompt = state.prompt[:seg_start] + segment + state.prompt[ph_start:]
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


def edit_prompt(state: UIState, prompt, max_chars: int) -> UIState:
    """The prompt as the user left it in the box, read like :func:`read_prompt`; a text over ``max_chars`` (or
    no text at all) is refused unread, and the state keeps its prompt."""
    if not isinstance(prompt, str) or len(prompt) > max_chars:
        size = len(prompt) if isinstance(prompt, str) else 0
        return replace(state, error=f"The prompt is {size} characters; at most {max_chars} are accepted")
    return read_prompt(state, prompt)


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
    """Delete slot k, its placeholders and the attribute tokens bound to it; later slots move up one number."""
    prompt = set_tokens(state, k, []).prompt if _segment_before(state.prompt, k + 1) else state.prompt
    prompt = _placeholder_re(k + 1).sub("", prompt)
    prompt = re.sub(r"[ \t]+\n", "\n", re.sub(r"[ \t]{2,}", " ", prompt)).strip()  # newlines the user typed stay
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
