"""Ready-made multi-reference prompts for the example gallery (data only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sigma_studio.examples import IMAGES
from sigma_studio.examples import SHAPES as SHAPES_IMAGES


@dataclass(frozen=True)
class Example:
    title: str
    prompt: str
    images: tuple[str, ...]  # file names under examples/images, img1 first
    layout: str = "none"  # none | canny | boxes
    layout_image: str | None = None
    boxes: tuple[tuple[float, float, float, float, str, str], ...] = ()  # x0, y0, x1, y1 (0..1), label, reference
    # SIGMA-GEN's other placements: 3-D boxes (cx, cy, cz, w, h, d, yaw°, label, reference), masks (a file under
    # ``folder``, label, reference), and a background picture under ``folder`` to insert the subjects into
    boxes3d: tuple[tuple, ...] = ()
    masks: tuple[tuple[str, str, str], ...] = ()
    background: str | None = None
    settings: dict = field(default_factory=dict)
    folder: Path = IMAGES

    @property
    def places_subjects(self) -> bool:
        """Whether it places references as SIGMA-GEN subjects (a box with a reference, a 3-D box or a mask)."""
        return any(b[5] for b in self.boxes) or bool(self.boxes3d or self.masks)

    def paths(self) -> list[str]:
        return [str(self.folder / name) for name in self.images]

    def mentioned(self) -> list[str]:
        """The pictures in the order the prompt mentions them (so "shape of img2, colour of img1" does not look
        like "shape of img1, colour of img2"), then any it does not mention."""
        import re

        order = [int(n) - 1 for n in re.findall(r"<img(\d+)>", self.prompt)]
        order = [k for i, k in enumerate(order) if k not in order[:i] and k < len(self.images)]
        return [self.paths()[k] for k in (*order, *(k for k in range(len(self.images)) if k not in order))]

    def thumbnail(self, height: int = 160):
        """The example's pictures side by side, in the order the prompt mentions them."""
        from PIL import Image

        tiles = [Image.open(p).convert("RGB") for p in self.mentioned()]
        tiles = [t.resize((max(1, t.width * height // t.height), height)) for t in tiles]
        sheet = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), height), (255, 255, 255))
        x = 0
        for t in tiles:
            sheet.paste(t, (x, 0))
            x += t.width + 4
        return sheet


EXAMPLES: tuple[Example, ...] = (
    Example(
        "Compositional",
        "A portrait of <id>this astronaut <img1> holding <subject>this cat <img2> on a launch pad",
        ("astronaut.jpg", "cat.jpg"),
    ),
    Example(
        "Selective",
        "<select>Only the cup from <img1>, placed on a wooden desk next to <subject>this cat <img2>",
        ("coffee.jpg", "cat.jpg"),
    ),
    Example(
        "Style transfer",
        "<subject>The rocket <img1> painted in the style of <style>this photograph <img2>",
        ("rocket.jpg", "coffee.jpg"),
    ),
    Example(
        "Layout",
        "<subject>A cat <img1> standing like this horse",
        ("cat.jpg",),
        layout="canny",
        layout_image="horse.png",
    ),
    Example(
        "Two subjects in boxes",
        "a sunny meadow",
        ("cat.jpg", "astronaut.jpg"),
        layout="boxes",
        boxes=((0.05, 0.4, 0.45, 0.95, "cat", "img1"), (0.5, 0.1, 0.95, 0.95, "astronaut", "img2")),
    ),
)

# The shapes world's tasks (for --model shapes): every picture is drawn to the world's rules (model/shapes/world.py).
SHAPES_EXAMPLES: tuple[Example, ...] = (
    Example(
        "Compose: shape of one, colour of the other",
        "Draw the <subject>shape <img1> in the <style>colour of <img2>.",
        ("yellow-triangle.png", "blue-circle.png"),
        folder=SHAPES_IMAGES,
    ),
    Example(
        "Compose, tokens swapped",
        "Draw the <subject>shape <img2> in the <style>colour of <img1>.",
        ("yellow-triangle.png", "blue-circle.png"),
        folder=SHAPES_IMAGES,
    ),
    Example("Select one object", "Draw only <select>the star <img1>.", ("three-things.png",), folder=SHAPES_IMAGES),
    Example(
        "Place it in a box",
        "Draw the <subject>shape <img1> placed like <layout>this box <img2>.",
        ("red-star.png", "box-lower-right.png"),
        folder=SHAPES_IMAGES,
    ),
    Example(
        "New background",
        "Put the <subject>shape <img1> on the <background>background of <img2>.",
        ("green-cross.png", "plain-blue.png"),
        folder=SHAPES_IMAGES,
    ),
    Example(
        "SIGMA-GEN: two subjects in boxes",
        "a grey picture of a red star, a blue circle",
        ("red-star.png", "blue-circle.png"),
        layout="boxes",
        boxes=((0.06, 0.08, 0.5, 0.52, "", "img1"), (0.5, 0.45, 0.94, 0.89, "", "img2")),
        folder=SHAPES_IMAGES,
    ),
    Example(
        "SIGMA-GEN: a mask, a 3-D box and a box",
        "a grey picture",
        ("yellow-triangle.png", "green-cross.png", "red-star.png"),
        layout="boxes",
        boxes=((0.55, 0.05, 0.95, 0.45, "", "img3"),),
        boxes3d=((-0.6, 0.55, 3.0, 1.3, 1.3, 0.02, 0.0, "", "img2"),),
        masks=(("mask-triangle.png", "", "img1"),),
        folder=SHAPES_IMAGES,
    ),
    Example(
        "SIGMA-GEN: into a background",
        "a grey picture of a green cross",
        ("green-cross.png",),
        layout="boxes",
        boxes=((0.45, 0.4, 0.95, 0.9, "", "img1"),),
        background="orange-circle-on-blue.png",
        folder=SHAPES_IMAGES,
    ),
)


def thumbnail_files(examples: tuple[Example, ...], folder: Path, height: int = 72) -> list[str]:
    """Each example's thumbnail as a PNG in ``folder`` (the buttons' icons), written atomically."""
    from sigma_studio.model.files import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, example in enumerate(examples):
        sheet = example.thumbnail(height)
        paths.append(str(atomic_write(folder / f"example-{k + 1}.png", lambda f, sheet=sheet: sheet.save(f, "PNG"))))
    return paths


def examples_for(arch) -> tuple[Example, ...]:
    """The gallery that suits a model: the shapes world's tasks for a model of the shapes architecture (the shipped
    one, or one retrained into any folder), photographs otherwise; SIGMA-GEN's examples only for a model whose skills
    include placing subjects (or are not known)."""
    from sigma_studio.model.presets import shapes

    world = arch.llm == shapes().llm and arch.max_image_size == shapes().max_image_size
    gallery = SHAPES_EXAMPLES if world else EXAMPLES
    if arch.skills is not None and "subjects" not in arch.skills:  # it was not trained to place subjects
        gallery = tuple(e for e in gallery if not e.places_subjects)
    return gallery
