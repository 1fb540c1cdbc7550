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
  ``source``; rows drawn before select kept it are drawn again from their world's seed and matched by their
  pictures);
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


class ReadError(Exception):
    """A probe's read, or the world its rows came from, that cannot be scored: the message says which and why."""


def drawn_meta(world: Path, wanted: set[int]) -> tuple[dict[int, dict], int]:
    """The meta of select rows ``wanted`` of ``world``'s eval/, as drawn today (with ``source``), and the world's
    canvas: the world's split drawn again from its seed, each row matched by its reference and target pictures."""
    try:
        info = json.loads((world / "world.json").read_text())
        table = pq.read_table(world / "eval" / "select.parquet").to_pylist()
    except (OSError, ValueError) as exc:
        raise ReadError(f"the rows' world {world} (--data): {exc}") from exc
    if max(wanted) >= len(table):
        raise ReadError(f"row {max(wanted)} is past the {len(table)} select rows of {world}: is --data right?")
    split = "seen" if info.get("eval_pairs") == "seen" else "eval"
    draws = len(table) + info.get("seen_skipped", {}).get("select", 0)  # the seen split leaves out training rows

    def key(pictures) -> tuple[bytes, bytes]:  # reference and target: the wording may differ (--no-attribute-tokens)
        return tuple(p.convert("RGB").tobytes() for p in (pictures[0], pictures[-1]))

    want = {key([Image.open(io.BytesIO(b)) for b in table[i]["image_list"]]): i for i in wanted}
    found = {}
    for ex in examples("select", split, draws, info["seed"], info["canvas"]):
        if (i := want.get(key(ex.images))) is not None:
            found[i] = ex.meta
    if len(found) < len(want):
        raise ReadError(f"{len(want) - len(found)} select rows of {world} are not the draws of its seed and split")
    return found, info["canvas"]


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


def select_rows(path: Path) -> list[dict]:
    """A read's select rows, each checked for what scoring needs, all of them with a plan."""
    try:
        rows = [r for r in json.loads(path.read_text())["rows"] if r.get("family") == "select"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReadError(f"{path}: not a `sigma shapes eval --json` record ({exc})") from exc
    if not rows:
        raise ReadError(f"{path}: no select rows")
    for r in rows:
        lacking = [f for f in ("row", "meta", "verdict") if f not in r] or [
            f for f in ("shape", "colour") if f not in r["meta"]
        ]
        if lacking or "ok" not in r["verdict"]:
            raise ReadError(f"{path}: select row {r.get('row', '?')} has no {', '.join(lacking) or 'verdict ok'}")
    if not any(r.get("plan") for r in rows):
        raise ReadError(f"{path}: no row has a plan; was it read with --think?")
    return rows


def read(run: Path, pairs: str, form: str, data: Path) -> dict[str, int] | None:
    """The counts of one read of a probe, or None when the probe has not written it."""
    path = run / f"{pairs}.json"
    if not path.is_file():
        return None
    rows = select_rows(path)
    missing = {r["row"] for r in rows if "source" not in r["meta"]} if form == "place" else set()
    drawn, canvas = drawn_meta(data / pairs, missing) if missing else ({}, 64)
    counts = {"rows": 0, "right": 0, "plan": 0, "given": 0, "entry": 0}
    for r in rows:
        verdict = plan_verdict(form, drawn.get(r["row"], r["meta"]), r.get("plan") or "", canvas)
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
    try:
        counts = {name: read(args.run, pairs, args.form, args.data) for pairs, name in READS.items()}
    except ReadError as exc:
        print(exc, file=sys.stderr)
        return 1
    if not any(counts.values()):
        print(f"{args.run}: no eval.json or seen.json yet (run examples/shapes_probe.sh first)", file=sys.stderr)
        return 1
    scene = args.form.startswith("scene")
    header = "| read | rows | right | plan right | right given a right plan |"
    print(header + (" scene's entry right |" if scene else ""))
    print("|---" * (6 if scene else 5) + "|")
    for name, c in counts.items():
        if c:
            line = f"| {name} | {c['rows']} | {c['right']} | {c['plan']} | {c['given']} of {c['plan']} |"
            print(line + (f" {c['entry']} |" if scene else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
