"""Generate one image through the public API.

    python -m sigma_studio.examples.quickstart            # the shipped shapes model: runs anywhere, offline
    python -m sigma_studio.examples.quickstart --model sigma --steps 50 --image man.jpg --image dog.jpg \\
        --prompt "Place <id>the man <img1> next to <subject>the dog <img2> in a park"

The PNG carries the generation record: ``sigma generate --from outputs/quickstart.png`` repeats it.
"""

from __future__ import annotations

import argparse
import sys

from sigma_studio.examples import SHAPES
from sigma_studio.model import GenerationConfig, LoaderConfig, SigmaError, build_request, load_pipeline
from sigma_studio.model.weights.preflight import preflight_arch

SHAPES_PROMPT = "Draw the <subject>shape <img1> in the <style>colour of <img2>."
SHAPES_IMAGES = [str(SHAPES / "yellow-triangle.png"), str(SHAPES / "blue-circle.png")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes", help="shapes | sigma | bagel | tiny | a checkpoint directory")
    ap.add_argument("--prompt", default=SHAPES_PROMPT)
    ap.add_argument("--image", action="append", default=[], help="reference image (img1, img2, ... in order)")
    ap.add_argument("--steps", type=int, default=GenerationConfig.steps)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="outputs/quickstart.png")
    args = ap.parse_args()
    images = args.image or (SHAPES_IMAGES if args.prompt == SHAPES_PROMPT else [])
    try:
        loader = LoaderConfig(model=args.model)
        config = GenerationConfig(steps=args.steps, seed=args.seed)
        # every input is checked against the model's configs before its weights are read
        request = build_request(args.prompt, images, arch=preflight_arch(loader), config=config)
        pipe = load_pipeline(loader)
        result = pipe(request)
        path = result.save(args.out, overwrite=True)
    except SigmaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    note = " (tiny random model: the image is noise)" if pipe.name == "tiny" else ""
    print(f"wrote {path}: {result.image.width}x{result.image.height}, seed {result.seed}, {result.seconds:.1f} s{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
