"""Draw the picture in docs/shapes.png: the web UI's examples for the shapes model, and a text-only prompt, with
what the shipped ``shapes`` model makes of each at seed 0 (only the public API is used).

    python examples/shapes_gallery.py --out docs/shapes.png

The first six rows are SIGMA's five families (compose twice, tokens swapped) and text alone; the last three are
SIGMA-GEN: subjects placed by 2-D boxes, by a mask, a 3-D box and a box together, and into a background picture.
For those the references column shows each subject's identity picture, then where the request places it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from sigma_studio.model import load_pipeline
from sigma_studio.model.files import atomic_write
from sigma_studio.webui.display import canvas_image
from sigma_studio.webui.examples import SHAPES_EXAMPLES, Example
from sigma_studio.webui.handlers import LayoutInputs, controls_of

# the web UI's examples for the shapes model (the same files, prompts and placements), then a text-only prompt
ROWS = [*SHAPES_EXAMPLES[:5], Example("Text", "a white circle", ()), *SHAPES_EXAMPLES[5:]]


def generate(pipe, example: Example) -> tuple[Image.Image, Image.Image | None]:
    """The example's picture at seed 0, and the picture of where its subjects go (None for SIGMA's families)."""
    refs = [Image.open(path).convert("RGB") for path in example.paths()]
    if not example.places_subjects:
        return pipe(example.prompt, refs, seed=0).image, None
    boxes, solid = [list(b) for b in example.boxes], [list(b) for b in example.boxes3d]
    masks = [[str(example.folder / name), label, ref] for name, label, ref in example.masks]
    background = str(example.folder / example.background) if example.background else None
    # the placements as the web UI's Boxes tab turns its tables into controls
    controls = controls_of(LayoutInputs("boxes", None, 0, 0, 0, None, None, boxes, background, solid, masks))
    images = {f"img{k + 1}": img for k, img in enumerate(refs)}
    placed = canvas_image(boxes, 256, boxes3d=solid, masks=masks, background=background)
    return pipe(example.prompt, images, controls=controls, seed=0).image, placed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="docs/shapes.png")
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--scale", type=int, default=2, help="pixel magnification of the 64 px pictures")
    args = ap.parse_args()
    pipe = load_pipeline(args.model)
    s, pad, text_w, cols = 64 * args.scale, 10, 330, 4
    font = ImageFont.load_default(size=13)
    x_out = text_w + cols * (s + pad) + 30
    sheet = Image.new("RGB", (x_out + s + pad, len(ROWS) * (s + pad) + pad + 24), "white")
    draw = ImageDraw.Draw(sheet)
    for x, label in ((pad, "prompt"), (text_w, "references (SIGMA-GEN: identities, then where each goes)"),
                     (x_out, "output, seed 0")):  # fmt: skip
        draw.text((x, 6), label, fill=(90, 90, 90), font=font)
    for r, row in enumerate(ROWS):
        y = 24 + pad + r * (s + pad)
        image, placed = generate(pipe, row)
        lines = row.prompt
        for cut in (" in the ", " placed ", " on the ", " of a "):  # two lines where a long prompt reads best
            lines = lines.replace(cut, "\n" + cut.lstrip())
        draw.multiline_text((pad, y + s // 2 - 14), lines, fill="black", font=font, spacing=4)
        pictures = [Image.open(path) for path in row.paths()] + ([placed] if placed is not None else [])
        for k, img in enumerate(pictures):
            sheet.paste(img.convert("RGB").resize((s, s), Image.NEAREST), (text_w + k * (s + pad), y))
        mid = y + s // 2
        draw.line((x_out - 26, mid, x_out - 6, mid), fill="black", width=2)
        draw.polygon([(x_out - 6, mid), (x_out - 12, mid - 5), (x_out - 12, mid + 5)], fill="black")
        sheet.paste(image.resize((s, s), Image.NEAREST), (x_out, y))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda f: sheet.save(f, "PNG"))  # a temporary name, then renamed
    print(args.out)


if __name__ == "__main__":
    main()
