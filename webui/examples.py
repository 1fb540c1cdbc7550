"""Ready-made multi-reference prompts for the example gallery (data only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

IMAGES = Path(__file__).resolve().parents[1] / "examples" / "images"


@dataclass(frozen=True)
class Example:
    title: str
    prompt: str
    images: tuple[str, ...]  # file names under examples/images, img1 first
    layout: str = "none"  # none | canny | boxes
    layout_image: str | None = None
    boxes: tuple[tuple[float, float, float, float, str, str], ...] = ()  # x0, y0, x1, y1 (0..1), label, reference
    settings: dict = field(default_factory=dict)

    def paths(self) -> list[str]:
        return [str(IMAGES / name) for name in self.images]


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
