"""Did a think-mode select probe write the right plan, and draw what a right plan says? Its plan figures.

    python examples/shapes_plan_read.py runs/probe/select-shipped-plans colour
    python examples/shapes_plan_read.py runs/probe/select-shipped-place-plans place
    python examples/shapes_plan_read.py runs/probe/select-shipped-scene-plans scene
    python examples/shapes_plan_read.py runs/probe/select-shipped-scene+colour-plans scene+colour

For each read of the probe (``eval.json``: held-out pairs; ``seen.json``: training pairs, as
``examples/shapes_probe.sh`` writes them), its select rows: how many are right, how many plans are right, and how
many rows with a right plan are right. A plan is right when it says what the row's target needs, by its form
(``model.shapes.tasks.plan_of``):

* ``colour``: ``the star is red``, the target's shape and colour;
* ``place``: ``the star is at the top left``, the cell of the box the named object was drawn in (the row's meta
  ``source``; rows drawn before select kept it are drawn again from their world's seed and matched by picture);
* ``scene``: the scene's entry for the named shape gives the target's colour;
* ``scene+colour``: the statement after ``, so `` is the colour plan (the scene's entry is counted too).

Those rows are read from ``DATA/{eval,seen}/eval/select.parquet`` (``--data``, default ``runs/probe``).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from sigma_studio.model.shapes.auxiliary import place_words
from sigma_studio.model.shapes.tasks import examples

FORMS = ("colour", "place", "scene", "scene+colour")
READS = {"eval": "held-out pairs", "seen": "training pairs"}
DRAWS = 4  # rows of a split drawn again per row read: the seen split leaves out draws that are training rows


def drawn_meta(world: Path, wanted: set[int]) -> dict[int, dict]:
    """The meta of select rows ``wanted`` of ``world``'s eval/, as drawn today (with ``source``): the world's split
    drawn again from its seed, each row matched by its instruction and reference picture."""
    info = json.loads((world / "world.json").read_text())
    split = "seen" if info.get("eval_pairs") == "seen" else "eval"
    table = pq.read_table(world / "eval" / "select.parquet").to_pylist()
    key = lambda instruction, picture: (instruction, picture.convert("RGB").tobytes())  # noqa: E731
    want = {
        key(table[i]["instruction_list"][0][0], Image.open(io.BytesIO(table[i]["image_list"][0]))): i for i in wanted
    }
    found: dict[int, dict] = {}
    for ex in examples("select", split, DRAWS * len(table) + 100, info["seed"], info["canvas"]):
        i = want.get(key(ex.instruction, ex.images[0]))
        if i is not None:
            found[i] = ex.meta
        if len(found) == len(want):
            return found
    raise ValueError(f"{len(want) - len(found)} select rows of {world} are not among its split's first draws")


def plan_verdict(form: str, meta: dict, plan: str, canvas: int = 64) -> dict[str, bool]:
    """``{"plan": right}`` (and ``"entry"``, the scene's entry for the named shape, for scene forms)."""
    colour_plan = f"the {meta['shape']} is {meta['colour']}"
    plan = plan.strip()
    if form == "colour":
        return {"plan": plan == colour_plan}
    if form == "place":
        return {"plan": plan == f"the {meta['shape']} is {place_words(meta['source'], canvas)}"}
    if form not in ("scene", "scene+colour"):
        raise ValueError(f"plan form {form!r}: one of {', '.join(FORMS)}")
    scene, _, last = plan.partition(", so ")
    entry = dict(re.findall(r"the (\w+) is (\w+)", scene)).get(meta["shape"]) == meta["colour"]
    return {"plan": entry if form == "scene" else last.strip() == colour_plan, "entry": entry}


def read(run: Path, pairs: str, form: str, data: Path) -> dict[str, int] | None:
    """The counts of one read of a probe, or None when the probe has not written it."""
    path = run / f"{pairs}.json"
    if not path.is_file():
        return None
    rows = [r for r in json.loads(path.read_text())["rows"] if r["family"] == "select"]
    missing = {r["row"] for r in rows if "source" not in r["meta"]} if form == "place" else set()
    drawn = drawn_meta(data / pairs, missing) if missing else {}
    counts = {"rows": 0, "right": 0, "plan": 0, "given": 0, "entry": 0}
    for r in rows:
        verdict = plan_verdict(form, drawn.get(r["row"], r["meta"]), r.get("plan") or "")
        ok = bool(r["verdict"]["ok"])
        counts["rows"] += 1
        counts["right"] += ok
        counts["plan"] += verdict["plan"]
        counts["given"] += ok and verdict["plan"]
        counts["entry"] += verdict.get("entry", False)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a probe's folder (runs/probe/select-...)")
    parser.add_argument("form", choices=FORMS, help="the form of plan the probe trained")
    parser.add_argument("--data", type=Path, default=Path("runs/probe"), help="where the probe's read rows are")
    args = parser.parse_args(argv)
    header = "| read | rows | right | plan right | right given a right plan |"
    scene = args.form.startswith("scene")
    print(header + (" scene's entry right |" if scene else ""))
    print("|---" * (6 if scene else 5) + "|")
    found = False
    for pairs, name in READS.items():
        try:
            c = read(args.run, pairs, args.form, args.data)
        except (OSError, ValueError, KeyError) as exc:
            print(f"{args.run}/{pairs}.json: {exc}", file=sys.stderr)
            return 1
        if c is None:
            continue
        found = True
        line = f"| {name} | {c['rows']} | {c['right']} | {c['plan']} | {c['given']} of {c['plan']} |"
        print(line + (f" {c['entry']} |" if scene else ""))
    if not found:
        print(f"{args.run}: no eval.json or seen.json yet (run examples/shapes_probe.sh first)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
