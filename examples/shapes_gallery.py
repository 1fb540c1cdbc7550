"""Draw the picture in docs/shapes.png: for each task of the shapes world, the references and what the shipped
``shapes`` model makes of them (only the public API is used).

    python examples/shapes_gallery.py --out docs/shapes.png
"""

from __future__ import annotations

import argparse

from PIL import Image, ImageDraw, ImageFont

from sigma_studio.model import load_pipeline
from sigma_studio.model.shapes.world import Thing, box_picture, centred, render

ROWS = [
    ("Draw the <subject>shape <img1> in the <style>colour of <img2>.",
     [render([centred("triangle", "yellow", 34)]), render([centred("circle", "blue", 32)])]),
    ("Draw the <subject>shape <img2> in the <style>colour of <img1>.",
     [render([centred("triangle", "yellow", 34)]), render([centred("circle", "blue", 32)])]),
    ("Draw only <select>the star <img1>.",
     [render([Thing("square", "orange", (4, 6, 20, 20)), Thing("star", "purple", (36, 8, 22, 22)),
              Thing("diamond", "green", (14, 38, 22, 22))])]),
    ("Draw the <subject>shape <img1> placed like <layout>this box <img2>.",
     [render([centred("star", "red", 34)]), box_picture((30, 28, 30, 30))]),
    ("Put the <subject>shape <img1> on the <background>background of <img2>.",
     [render([centred("cross", "green", 30)]), Image.new("RGB", (64, 64), (40, 80, 220))]),
    ("a white circle", []),
]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="docs/shapes.png")
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--scale", type=int, default=2, help="pixel magnification of the 64 px pictures")
    args = ap.parse_args()
    pipe = load_pipeline(args.model)
    s, pad, text_w = 64 * args.scale, 10, 330
    font = ImageFont.load_default(size=13)
    sheet = Image.new("RGB", (text_w + 3 * (s + pad) + 30, len(ROWS) * (s + pad) + pad + 24), "white")
    draw = ImageDraw.Draw(sheet)
    for x, label in ((pad, "prompt"), (text_w, "references"), (text_w + 2 * (s + pad) + 30, "output")):
        draw.text((x, 6), label, fill=(90, 90, 90), font=font)
    for r, (prompt, refs) in enumerate(ROWS):
        y = 24 + pad + r * (s + pad)
        result = pipe(prompt, refs, seed=0)
        lines = prompt
        for cut in (" in the ", " placed ", " on the "):  # two lines where a long prompt reads best
            lines = lines.replace(cut, "\n" + cut.lstrip())
        draw.multiline_text((pad, y + s // 2 - 14), lines, fill="black", font=font, spacing=4)
        for k, img in enumerate(refs):
            sheet.paste(img.resize((s, s), Image.NEAREST), (text_w + k * (s + pad), y))
        x_out = text_w + 2 * (s + pad) + 30
        draw.line((x_out - 26, y + s // 2, x_out - 6, y + s // 2), fill="black", width=2)
        mid = y + s // 2
        draw.polygon([(x_out - 6, mid), (x_out - 12, mid - 5), (x_out - 12, mid + 5)], fill="black")
        sheet.paste(result.image.resize((s, s), Image.NEAREST), (x_out, y))
    sheet.save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
