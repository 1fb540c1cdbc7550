"""Generate one image through the public API.

    python examples/quickstart.py                         # the tiny random model: runs anywhere, output is noise
    python examples/quickstart.py --model /path/to/BAGEL-7B-MoT --steps 50

With real weights, pass two reference photos to see SIGMA's interleaved prompt at work:

    python examples/quickstart.py --model DIR --image man.jpg --image dog.jpg \
        --prompt "Place <id>the man <img1> next to <subject>the dog <img2> in a park"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sigma_studio.model import GenerationConfig, SigmaError, load_pipeline
from sigma_studio.model.images import save_png


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="checkpoint directory, or 'tiny'")
    ap.add_argument("--prompt", default="A red apple <subject> <img1> on a wooden table")
    ap.add_argument("--image", action="append", default=[], help="reference image (img1, img2, ... in order)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="outputs/quickstart.png")
    args = ap.parse_args()
    try:
        pipe = load_pipeline(args.model)
        images = args.image or (
            [str(Path(__file__).parent / "assets" / "apple.png")] if "<img1>" in args.prompt else []
        )
        result = pipe(args.prompt, images, config=GenerationConfig(steps=args.steps, seed=args.seed))
        path = save_png(result.image, args.out, {"sigma:prompt": args.prompt, "sigma:seed": str(result.seed)})
    except SigmaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    note = " (tiny random model: the image is noise)" if pipe.name == "tiny" else ""
    print(f"wrote {path}: {result.image.width}x{result.image.height}, seed {result.seed}, {result.seconds:.1f} s{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
