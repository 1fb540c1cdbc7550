"""The interleaved prompt: text with image placeholders and SIGMA attribute tokens -> ordered parts.

``Place <id>the man <img1> next to <subject>the dog <img2> in the style of <style>this painting <img3>``
becomes text, image 1 (attribute ``<id>``), text, image 2 (``<subject>``), text, image 3 (``<style>``).

Rules (user prompts, :func:`parse_prompt`):

* Placeholders: ``<imgN>``, ``<img_N>``, ``<image_N>``, ``<image N>`` (1-based, case-insensitive).
* Any other ``<word>`` must be one of the 15 attribute tokens; control tokens such as ``<|im_start|>`` are
  added by the model and refused in prompts.
* An attribute token belongs to the first image placeholder after it (``<style>this painting <img3>``); one
  image may carry several (``<subject><clothing>the jacket <img1>``). An attribute token with no image after it
  stays in the text as a plain token, with a warning.
* A placeholder naming an image that was not given is an error. An image given but never placed is appended
  after the text, in order, with a warning. An image may be placed more than once.
* Text between placeholders is stripped of surrounding white space; empty pieces are dropped.

Training rows follow the released SIGMA data rules instead (:func:`parse_training_instruction`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import PromptError
from .tokens import ATTRIBUTE_TOKENS, suggest_token

PLACEHOLDER_RE = re.compile(r"<\s*(?:img|image)[\s_]*(\d+)\s*>", re.IGNORECASE)
TRAINING_PLACEHOLDER_RE = re.compile(r"<image(?:[_\s]+)(\d+)>")
ANGLE_TOKEN_RE = re.compile(r"<[^<>\s]{1,40}>")
IMAGE_NAME_RE = re.compile(r"^(?:img|image)?[\s_]*(\d+)$", re.IGNORECASE)
DEFAULT_MAX_IMAGES = 16
# Bounds on a user prompt, checked before anything that grows with its length (front ends import them: the web
# server refuses a longer request body field with the same numbers). 20 000 characters is ~5 000 tokens, a seventh
# of the released model's context; 64 tags (attribute tokens + image placeholders) is 16 placements (the most the
# context holds, DEFAULT_MAX_IMAGES) with 4 attribute tokens each.
MAX_PROMPT_CHARS = 20_000
MAX_PROMPT_TAGS = 64
QUOTE_CHARS = 80  # the longest piece of a prompt a warning or an error quotes


@dataclass(frozen=True)
class TextPart:
    text: str
    plan: bool = False  # the model's own written plan (think mode), not the user's words


@dataclass(frozen=True)
class ImagePart:
    index: int  # 0-based index into the images the caller passed
    attributes: tuple[str, ...] = ()  # attribute tokens bound to this placement
    placeholder: str | None = None  # as written in the prompt; None when appended or given positionally


Part = TextPart | ImagePart


@dataclass(frozen=True)
class InterleavedPrompt:
    parts: tuple[Part, ...]
    warnings: tuple[str, ...] = ()

    @property
    def images(self) -> tuple[ImagePart, ...]:
        return tuple(p for p in self.parts if isinstance(p, ImagePart))

    @property
    def texts(self) -> tuple[TextPart, ...]:
        return tuple(p for p in self.parts if isinstance(p, TextPart))


def image_number(name: str) -> int:
    """``img2``, ``image_2``, ``image 2`` or ``2`` -> 2."""
    m = IMAGE_NAME_RE.match(name.strip())
    if not m or int(m.group(1)) < 1:
        raise PromptError(f"Image name '{name}' is not a placeholder name: use img1, img2, ... (as in the prompt)")
    return int(m.group(1))


def attribute_tokens_in(text: str) -> tuple[str, ...]:
    return tuple(t for t in ANGLE_TOKEN_RE.findall(text) if t in ATTRIBUTE_TOKENS)


def check_tokens(text: str) -> None:
    """Refuse ``<word>`` tokens that are neither placeholders nor attribute tokens."""
    for tok in ANGLE_TOKEN_RE.findall(text):
        if tok in ATTRIBUTE_TOKENS or PLACEHOLDER_RE.fullmatch(tok):
            continue
        if tok.startswith("<|"):
            raise PromptError(f"{tok} is a control token that the model adds itself; remove it from the prompt")
        close = suggest_token(tok)
        hint = f" Did you mean {close}?" if close else ""
        raise PromptError(
            f"Unknown token {tok}.{hint} Attribute tokens are: {' '.join(ATTRIBUTE_TOKENS)}; "
            "images are written <img1>, <img2>, ..."
        )


def quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """``text`` in quotes for a message, cut to ``limit`` characters with an ellipsis (never a whole long prompt)."""
    text = " ".join(text.split())
    return f"'{text}'" if len(text) <= limit else f"'{text[: limit - 1]}…'"


def check_prompt_size(prompt: str) -> None:
    """Refuse a prompt over ``MAX_PROMPT_CHARS`` characters or ``MAX_PROMPT_TAGS`` tags, before any parsing."""
    if len(prompt) > MAX_PROMPT_CHARS:
        raise PromptError(
            f"the prompt is {len(prompt)} characters; at most {MAX_PROMPT_CHARS} are accepted: shorten it"
        )
    tags = len(PLACEHOLDER_RE.findall(prompt)) + len(attribute_tokens_in(prompt))
    if tags > MAX_PROMPT_TAGS:
        raise PromptError(
            f"the prompt holds {tags} attribute tokens and image placeholders; at most {MAX_PROMPT_TAGS} are "
            "accepted: keep one token per image and attribute"
        )


def _bind(parts: list[Part], warnings: list[str]) -> tuple[Part, ...]:
    """Attach each text piece's attribute tokens to the image placed right after it. Tokens that bind to no image
    give one warning in all, quoting the first such piece of text (shortened)."""
    out: list[Part] = []
    unbound: list[tuple[str, str]] = []  # (token, the text it is in)
    for i, part in enumerate(parts):
        if isinstance(part, ImagePart) and i > 0 and isinstance(parts[i - 1], TextPart):
            part = ImagePart(part.index, attribute_tokens_in(parts[i - 1].text), part.placeholder)
        elif isinstance(part, TextPart) and not (i + 1 < len(parts) and isinstance(parts[i + 1], ImagePart)):
            unbound += [(tok, part.text) for tok in attribute_tokens_in(part.text)]
        out.append(part)
    if len(unbound) == 1:
        tok, text = unbound[0]
        warnings.append(f"{tok} in {quote(text)} is not followed by an image; it is kept as plain text")
    elif unbound:
        kinds = " ".join(dict.fromkeys(tok for tok, _ in unbound))
        warnings.append(
            f"{len(unbound)} attribute tokens ({kinds}) are not followed by an image, so they bind to no image and "
            f"are kept as plain text (the first in {quote(unbound[0][1])})"
        )
    return tuple(out)


def parse_prompt(
    prompt: str, num_images: int, *, names: Sequence[int] | None = None, max_images: int = DEFAULT_MAX_IMAGES
) -> InterleavedPrompt:
    """Parse a user prompt against ``num_images`` given images.

    Args:
        prompt: the interleaved prompt.
        num_images: how many images were given.
        names: the placeholder number of each given image (default 1..num_images).
        max_images: most image placements the context may hold.
    """
    check_prompt_size(prompt)
    check_tokens(prompt)
    numbers = list(names) if names is not None else list(range(1, num_images + 1))
    if len(set(numbers)) != len(numbers):
        raise PromptError(f"Two images were given the same name: {sorted(numbers)}")
    by_number = {n: i for i, n in enumerate(numbers)}
    parts: list[Part] = []
    warnings: list[str] = []
    placed: set[int] = set()
    pos = 0
    for m in PLACEHOLDER_RE.finditer(prompt):
        text = prompt[pos : m.start()].strip()
        if text:
            parts.append(TextPart(text))
        n = int(m.group(1))
        if n not in by_number:
            given = ", ".join(f"img{k}" for k in sorted(by_number)) or "none"
            raise PromptError(
                f"{m.group(0)} names an image that was not given (given: {given}); pass --image img{n}=FILE"
            )
        parts.append(ImagePart(by_number[n], placeholder=m.group(0)))
        placed.add(by_number[n])
        pos = m.end()
    tail = prompt[pos:].strip()
    if tail:
        parts.append(TextPart(tail))
    for i in range(num_images):  # one short warning per given image (they are few: at most DEFAULT_MAX_IMAGES)
        if i not in placed:
            warnings.append(f"img{numbers[i]} is not placed in the prompt; it is added after the text")
            parts.append(ImagePart(i))
    if not parts:
        raise PromptError("The prompt is empty: give some text, images, or both")
    n_placed = sum(isinstance(p, ImagePart) for p in parts)
    if n_placed > max_images:
        raise PromptError(f"The prompt places {n_placed} images; at most {max_images} fit in the context")
    return InterleavedPrompt(_bind(parts, warnings), tuple(warnings))


def prompt_from_inputs(inputs: Sequence[object]) -> InterleavedPrompt:
    """An explicit interleaved list (strings verbatim, anything else an image, numbered in order)."""
    check_prompt_size(" ".join(item for item in inputs if isinstance(item, str)))
    parts: list[Part] = []
    n_images = 0
    for item in inputs:
        if isinstance(item, str):
            parts.append(TextPart(item))
        else:
            parts.append(ImagePart(n_images))
            n_images += 1
    if not parts:
        raise PromptError("The input list is empty")
    warnings: list[str] = []
    return InterleavedPrompt(_bind(parts, warnings), tuple(warnings))


@dataclass(frozen=True)
class TrainingParts:
    """A training instruction laid out by the released SIGMA rules; ``target_at`` is the target's part index."""

    parts: tuple[Part, ...]
    target_index: int
    skipped_placeholders: tuple[int, ...]
    dropped_references: tuple[int, ...]


# A training instruction may end with the plan the model should write before drawing (BAGEL's think mode, its
# <think> ... </think> tags): the plan becomes its own text block, right before the target, and is always trained
# with cross-entropy (finetune.packing); the tags themselves are not kept.
PLAN_RE = re.compile(r"<think>(.*?)</think>\s*$", re.DOTALL)


def split_plan(instruction: str) -> tuple[str, str | None]:
    """``(instruction without its plan, the plan)``; the plan is None when the instruction has none."""
    m = PLAN_RE.search(instruction)
    if m is None:
        return instruction, None
    plan = m.group(1).strip()
    if not plan:
        raise PromptError("the instruction's <think></think> plan is empty: write the plan between the tags")
    return instruction[: m.start()].rstrip(), plan


def parse_training_instruction(instruction: str, num_images: int) -> TrainingParts:
    """Released SIGMA data rules: regex ``<image(?:[_\\s]+)(\\d+)>``; references only where named (dropped
    otherwise); a number beyond the list skipped; the last image is the target, appended if never named. A
    trailing ``<think>plan</think>`` (:func:`split_plan`) is the plan, placed right before the appended target."""
    if num_images < 1:
        raise PromptError("A training row needs at least one image (the target)")
    instruction, plan = split_plan(instruction)
    target = num_images - 1
    parts: list[Part] = []
    skipped: list[int] = []
    pos = 0
    for m in TRAINING_PLACEHOLDER_RE.finditer(instruction):
        text = instruction[pos : m.start()].strip()
        if text:
            parts.append(TextPart(text))
        idx = int(m.group(1)) - 1
        if 0 <= idx < num_images:
            parts.append(ImagePart(idx, placeholder=m.group(0)))
        else:
            skipped.append(idx + 1)
        pos = m.end()
    tail = instruction[pos:].strip()
    if tail:
        parts.append(TextPart(tail))
    named_target = any(isinstance(p, ImagePart) and p.index == target for p in parts)
    if plan is not None:
        if named_target:
            raise PromptError("a plan (<think>...</think>) comes before the target: do not name the target image")
        parts.append(TextPart(plan, plan=True))
    if not named_target:
        parts.append(ImagePart(target))
    named = {p.index for p in parts if isinstance(p, ImagePart)}
    dropped = tuple(i for i in range(target) if i not in named)
    bound = _bind(parts, [])
    first_target = next(i for i, p in enumerate(bound) if isinstance(p, ImagePart) and p.index == target)
    return TrainingParts(bound, first_target, tuple(skipped), dropped)
