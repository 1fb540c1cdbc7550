"""One typed generation request, built once by :func:`build_request` for every front end.

The CLI, the web UI, ``sigma batch`` and the Python API all call :func:`build_request`; the pipeline runs the
:class:`GenerationRequest` it returns. The builder parses the user's prompt into typed parts once and then
*appends* typed parts for structure controls (a ``<layout>`` reference per control image; the identity sheet and
the spatial control of SIGMA-GEN subjects) instead of rewriting the prompt text. It needs only an
:class:`~model.config.ArchConfig`, read from a checkpoint's configs, so every input (tokens, placeholders, files,
sizes, controls) is checked before any weight is read.

:meth:`GenerationRequest.sequence` lists exactly what the model receives, in order.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import ArchConfig, GenerationConfig
from ..errors import InputError
from ..images import open_image, resize_size, to_rgb
from .multisubject import Insertion, identity_dictionary, regions, spatial_control, subject_union
from .prompt import (
    DEFAULT_MAX_IMAGES,
    ImagePart,
    InterleavedPrompt,
    Part,
    TextPart,
    image_number,
    parse_prompt,
    prompt_from_inputs,
)
from .skills import skill_warnings
from .structure import ControlSpec, layout_images, load_rgb, parse_subjects, subject_size
from .tokens import ATTRIBUTE_HELP, ATTRIBUTE_TOKENS

ImageLike = Image.Image | str | Path
LAYOUT_TEXT = "following <layout>this layout"


@dataclass(frozen=True)
class RequestImage:
    """One image the model receives: a user reference (``img1``...) or an image the builder made."""

    name: str
    image: Image.Image = field(repr=False, compare=False)
    role: str = "reference"
    file: str | None = None  # absolute path of the file it was read from
    sha256: str = ""  # of the decoded RGB pixels and their size: the same picture in any file format
    model_size: tuple[int, int] | None = None  # (width, height) the model's autoencoder receives

    def describe(self) -> dict:
        return {"name": self.name, "role": self.role, "file": self.file, "sha256": self.sha256}


@dataclass(frozen=True)
class GenerationRequest:
    """Everything one generation needs. ``parts`` index into ``images``; ``config.size`` is resolved."""

    prompt: str  # the user's prompt as given (the record stores it; the model receives ``parts``)
    parts: tuple[Part, ...]
    images: tuple[RequestImage, ...]
    config: GenerationConfig
    controls: ControlSpec = ControlSpec()
    insertion: Insertion | None = field(default=None, compare=False)
    warnings: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        assert self.config.size is not None
        return self.config.size

    def replace(self, **changes) -> GenerationRequest:
        return dataclasses.replace(self, **changes)

    def sequence(self) -> list[dict]:
        """The interleaved sequence the model receives: text pieces and images with their attribute tokens."""
        out: list[dict] = []
        for part in self.parts:
            if isinstance(part, TextPart):
                out.append({"text": part.text})
            else:
                img = self.images[part.index]
                out.append({"image": img.name, "role": img.role, "tokens": list(part.attributes)})
                out[-1]["size"] = list(img.model_size or img.image.size)
        return out

    def model_text(self) -> str:
        """The sequence written out as one line, each image as ``<name>`` (for logs and the terminal)."""
        return " ".join(
            p.text if isinstance(p, TextPart) else f"<{self.images[p.index].name}>" for p in self.parts
        ).strip()


def pixel_hash(img: Image.Image) -> str:
    rgb = to_rgb(img)
    return hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes()).hexdigest()


def _image(name: str, value: ImageLike, role: str = "reference") -> RequestImage:
    if isinstance(value, Image.Image):
        img, file = to_rgb(value), None
    elif isinstance(value, str | Path):
        img, file = to_rgb(open_image(value)), str(Path(value).resolve())
    else:
        raise InputError(f"{name}: expected an image or a file path, got {type(value).__name__}")
    return RequestImage(name, img, role, file, pixel_hash(img))


def _references(images: Sequence[ImageLike] | Mapping[str, ImageLike] | None) -> list[RequestImage]:
    if isinstance(images, Mapping):
        named = [(f"img{image_number(k)}", v) for k, v in images.items()]
        if len({n for n, _ in named}) != len(named):
            raise InputError(f"Two images were given the same name: {', '.join(images)}")
        named.sort(key=lambda nv: image_number(nv[0]))
        return [_image(n, v) for n, v in named]
    return [_image(f"img{k}", v) for k, v in enumerate(images or [], start=1)]


def build_request(
    prompt: str | InterleavedPrompt | None = None,
    images: Sequence[ImageLike] | Mapping[str, ImageLike] | None = None,
    *,
    arch: ArchConfig,
    config: GenerationConfig | None = None,
    controls: ControlSpec | None = None,
    inputs: Sequence[str | ImageLike] | None = None,
    estimate_depth: bool = True,
    cache_dir: str | None = None,
) -> GenerationRequest:
    """Parse, open, render and check everything one generation needs.

    Args:
        prompt: the interleaved prompt (``<imgN>`` placeholders, attribute tokens; :mod:`~model.request.prompt`), or
            parts already laid out (an :class:`InterleavedPrompt` whose indices refer to ``images``, as batch rows are).
        images: the references, as a list (img1, img2, ...) or a mapping ``{"img1": ...}``; files or PIL images.
        arch: the model's architecture (sizes, limits): from the loaded pipeline or from the checkpoint's configs.
        config: sampler settings; ``size`` may be None (the last reference's size, or the largest square).
        controls: structure controls (:class:`~model.request.structure.ControlSpec`).
        inputs: instead of prompt/images, an explicit interleaved list of strings and images (used verbatim).
        estimate_depth: False puts a grey stand-in where a depth map would be estimated (previews).
        cache_dir: Hugging Face cache of the depth model.
    """
    config = config or GenerationConfig()
    controls = controls or ControlSpec()
    refs, parsed, text = _parse(prompt, images, inputs)
    warnings = [*parsed.warnings, *skill_warnings(arch, parsed.parts, controls, config.think)]
    parts, images_out = list(parsed.parts), list(refs)
    insertion = None
    if controls.subjects:
        size = subject_size(controls, arch, config.size)
        parts, images_out, insertion = _with_subjects(parts, images_out, controls, size, warnings, arch)
    else:
        size = config.size or _default_size(parts, images_out, controls, arch)
    rendered = layout_images(controls, arch, size, estimate=estimate_depth, cache_dir=cache_dir)
    for kind, control in rendered.items():  # canny / depth (and boxes when they place no subjects), at the size
        images_out.append(RequestImage(kind, control, kind, None, pixel_hash(control)))
        parts += [TextPart(LAYOUT_TEXT), ImagePart(len(images_out) - 1, ("<layout>",))]
    parts = _merge_text(parts)
    _check(parts, size, arch)
    images_out = [replace(img, model_size=resize_size(*img.image.size, arch.vae_transform)) for img in images_out]
    return GenerationRequest(
        text, tuple(parts), tuple(images_out), config.replace(size=size), controls, insertion, tuple(warnings)
    )


def _parse(prompt, images, inputs) -> tuple[list[RequestImage], InterleavedPrompt, str]:
    if inputs is not None:
        if prompt is not None or images:
            raise InputError("Give either a prompt with images, or an interleaved input list, not both")
        pics = [x for x in inputs if not isinstance(x, str)]
        refs = [_image(f"img{k}", v) for k, v in enumerate(pics, start=1)]
        parsed = prompt_from_inputs(inputs)
        return refs, parsed, prompt_text(parsed.parts, refs)
    refs = _references(images)
    if isinstance(prompt, InterleavedPrompt):
        if any(p.index >= len(refs) for p in prompt.images):
            raise InputError(f"The parsed prompt refers to more images than the {len(refs)} given")
        refs, parsed = _placed_only(prompt, refs)
        return refs, parsed, prompt_text(parsed.parts, refs)
    if prompt is None:
        raise InputError("No prompt given: write what to generate")
    parsed = parse_prompt(prompt, len(refs), names=[image_number(r.name) for r in refs])
    return refs, parsed, prompt


def _placed_only(parsed: InterleavedPrompt, refs: list[RequestImage]):
    """Laid-out parts keep only the images they place, renamed img1, img2, ... in order of first placement."""
    order = list(dict.fromkeys(p.index for p in parsed.images))
    new_index = {old: k for k, old in enumerate(order)}
    kept = [dataclasses.replace(refs[old], name=f"img{k + 1}") for k, old in enumerate(order)]
    parts = tuple(
        dataclasses.replace(p, index=new_index[p.index]) if isinstance(p, ImagePart) else p for p in parsed.parts
    )
    return kept, InterleavedPrompt(parts, parsed.warnings)


def prompt_text(parts: Sequence[Part], images: Sequence[RequestImage]) -> str:
    """Parts written back as a user prompt (``<imgN>`` per image) that :func:`parse_prompt` reads the same."""
    return " ".join(p.text if isinstance(p, TextPart) else f"<{images[p.index].name}>" for p in parts)


def _default_size(parts, images: list[RequestImage], controls: ControlSpec, arch: ArchConfig) -> tuple[int, int]:
    """The output size when none is asked for: the model size of the picture a Canny or depth control comes from
    (the layout is that picture's), else of the last placed reference (the released rule), else the largest
    square. Control images are then rendered at this size, so a record's size alone reproduces them."""
    source = controls.canny or controls.depth_map or controls.depth
    placed = [p for p in parts if isinstance(p, ImagePart)]
    if source:
        w, h = resize_size(*load_rgb(source).size, arch.vae_transform)
    elif placed:
        w, h = resize_size(*images[placed[-1].index].image.size, arch.vae_transform)
    else:
        return arch.max_image_size, arch.max_image_size
    return h, w


def _with_subjects(
    parts: list[Part], images: list[RequestImage], controls: ControlSpec, size: tuple[int, int], warnings: list[str],
    arch: ArchConfig,
):  # fmt: skip
    """SIGMA-GEN: the identity sheet under <subject> (<id> for faces) and the spatial control under <layout> (its
    routing maps drawn at the model's ``routing_step``, the sheet laid out in its ``sheet_rows``), then the user's
    parts after "Place these subjects in" (or "... to compose:"). References used as subjects leave the sequence,
    with the attribute tokens bound to them."""
    by_name = {img.name: img.image for img in images}
    subjects = parse_subjects(controls, size, by_name)
    scene_depth = None
    if controls.scene_depth:
        depth = open_image(controls.scene_depth).convert("L")
        scene_depth = np.asarray(depth if depth.size == size[::-1] else depth.resize(size[::-1], Image.BICUBIC))
    reg = regions(subjects, size, scene_depth)
    used = {s.id for s in subjects if s.id in by_name}
    moved = [p for p in parts if isinstance(p, ImagePart) and images[p.index].name in used]
    if moved:  # say what changed in what the user wrote, in one warning
        names = ", ".join(dict.fromkeys(images[p.index].name for p in moved))
        tokens = " ".join(dict.fromkeys(t for p in moved for t in p.attributes))
        tokens = f" with the tokens bound to them ({tokens})" if tokens else ""
        warnings.append(f"{names}: placed as subjects, so they join the identity sheet{tokens} and leave the prompt")
    parts = _drop_images(parts, {k for k, img in enumerate(images) if img.name in used})
    sheet = identity_dictionary(subjects, max_rows=arch.sheet_rows)
    spatial = spatial_control(reg, arch.routing_step)
    images = [*images, RequestImage("identities", sheet, "identities", None, pixel_hash(sheet))]
    images.append(RequestImage("spatial", spatial, "spatial", None, pixel_hash(spatial)))
    tag = "<id>" if controls.faces else "<subject>"
    head = "Place these subjects to compose:" if controls.compose else "Place these subjects in"
    if not any(isinstance(p, TextPart) for p in parts):
        parts = [*parts, TextPart("a scene")]
    new = [TextPart(f"{tag}these subjects"), ImagePart(len(images) - 2, (tag,))]
    new += [TextPart("<layout>arranged like"), ImagePart(len(images) - 1, ("<layout>",)), TextPart(head), *parts]
    insertion = None
    if controls.background:
        insertion = Insertion(load_rgb(controls.background), ~subject_union(reg))
    return new, images, insertion


def _drop_images(parts: list[Part], drop: set[int]) -> list[Part]:
    """Remove the placements of some images and the attribute tokens bound to them (in the text before)."""
    out: list[Part] = []
    for part in parts:
        if isinstance(part, ImagePart) and part.index in drop:
            if out and isinstance(out[-1], TextPart) and part.attributes:
                text = out[-1].text
                for tok in part.attributes:
                    text = text.replace(tok, "")
                out[-1] = TextPart(" ".join(text.split()))
                if not out[-1].text:
                    out.pop()
            continue
        out.append(part)
    return out


def _merge_text(parts: list[Part]) -> list[Part]:
    """Adjacent text pieces become one, as if written together in the prompt."""
    out: list[Part] = []
    for part in parts:
        if isinstance(part, TextPart) and out and isinstance(out[-1], TextPart):
            out[-1] = TextPart(f"{out[-1].text} {part.text}")
        else:
            out.append(part)
    return out


def _check(parts: list[Part], size: tuple[int, int], arch: ArchConfig) -> None:
    if not parts:
        raise InputError("The prompt is empty: give some text, images, or both")
    n = sum(isinstance(p, ImagePart) for p in parts)
    if n > DEFAULT_MAX_IMAGES:
        raise InputError(f"The request places {n} images; at most {DEFAULT_MAX_IMAGES} fit in the context")
    check_size(size, arch)


def check_size(size: tuple[int, int], arch: ArchConfig) -> None:
    stride, limit = arch.pixels_per_token, arch.max_image_size
    h, w = size
    if h % stride or w % stride:
        hint = f"{max(stride, w // stride * stride)}x{max(stride, h // stride * stride)}"
        raise InputError(f"--size {w}x{h} is not a multiple of {stride} on both sides; try {hint}")
    if h > limit or w > limit:
        raise InputError(f"--size {w}x{h} is over this model's limit of {limit} pixels per side")


def token_table() -> list[tuple[str, str]]:
    """(token, what it takes from its image) for the 15 attribute tokens."""
    return [(t, ATTRIBUTE_HELP[t]) for t in ATTRIBUTE_TOKENS]
