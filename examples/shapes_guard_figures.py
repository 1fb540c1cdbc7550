"""The quality guard's slice (tests/test_shapes_guard.py), measured once to write docs/SHAPES.md's table.

python examples/shapes_guard_figures.py [MODEL]        # the shipped shapes model by default
"""

import sys
import tempfile
from pathlib import Path

from sigma_studio.finetune.sigmagen_recipe import make_eval
from sigma_studio.model import GenerationConfig, load_pipeline
from sigma_studio.model.shapes.evaluate import evaluate_pipeline
from sigma_studio.model.shapes.sigmagen_eval import evaluate_sigmagen
from sigma_studio.model.shapes.tasks import make_world

FAST = GenerationConfig(steps=20)
FAMILIES = ("compose", "select", "layout", "background", "text")


def main() -> None:
    pipe = load_pipeline(sys.argv[1] if len(sys.argv) > 1 else "shapes")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_world(folder, rows=10, eval_rows=8)
        _, rows = evaluate_pipeline(pipe, folder / "eval", per_family=8, families=FAMILIES, config=FAST)
        for family in FAMILIES:
            v = [r["verdict"]["ok"] for r in rows if r["family"] == family]
            print(f"{family}: {sum(v)}/{len(v)}")
        make_eval(folder / "sigmagen", 4, 0, pipe.arch.routing_step, pipe.arch.sheet_rows)
        _, scenes = evaluate_sigmagen(pipe, folder / "sigmagen", config=FAST)
        for n in ("2", "3", "4", "5"):
            s = [x["ok"] for r in scenes if len(r["meta"]["layers"]) == int(n)
                 for x in r["verdict"]["subjects"] if x["scored"]]  # fmt: skip
            print(f"sigmagen {n}: {sum(s)}/{len(s)}")


if __name__ == "__main__":
    main()
