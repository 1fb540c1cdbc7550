"""The ablation's table (examples/shapes_ablation.sh): every arm's held-out figures, each seed and their spread.

python examples/shapes_ablation_table.py [FOLDER]     # runs/ablation by default; prints markdown

An arm's row gives, for each family, the mean of its seeds' accuracy and, in brackets, each seed's figure; "spread"
is the largest minus the smallest seed's. Arms or seeds not evaluated yet (no eval.json) are listed as missing, so a
half-finished ablation prints what it has. Below the table, each mask arm's difference from "off" (trained as the
release trains), seed by seed: the comparison the paper's Table 4 makes.
"""

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

FAMILIES = ("compose", "select", "layout", "background", "text")
ARMS = {  # name in the script -> (attribute tokens, group mask)
    "off": ("on", "off (the release)"),
    "eq9": ("on", "eq. 9 as written"),
    "intent": ("on", "Fig. 2's intent"),
    "notokens": ("off", "any (identical)"),
}
RUN = re.compile(r"^(?P<arm>[a-z0-9]+)-seed(?P<seed>\d+)$")


def read(folder: Path) -> tuple[dict[str, dict[int, dict]], list[str]]:
    """arm -> seed -> eval.json's summary, and the runs still without one."""
    arms: dict[str, dict[int, dict]] = defaultdict(dict)
    missing = []
    for run in sorted(p for p in folder.iterdir() if p.is_dir()):
        m = RUN.match(run.name)
        if not m or m["arm"] not in ARMS:
            continue
        path = run / "eval.json"
        if not path.is_file():
            missing.append(run.name)
            continue
        arms[m["arm"]][int(m["seed"])] = json.loads(path.read_text())["summary"]
    return arms, missing


def pct(x: float) -> str:
    return f"{100 * x:.0f}"


def cell(values: list[float]) -> str:
    if not values:
        return "—"
    mean = sum(values) / len(values)
    seeds = "/".join(pct(v) for v in values)
    return f"{pct(mean)} % ({seeds})" if len(values) > 1 else f"{pct(mean)} % (one seed)"


def measure(summary: dict, family: str) -> float:
    return summary[family]["accuracy"]


def table(arms: dict[str, dict[int, dict]]) -> list[str]:
    head = ["attribute tokens", "group mask", "seeds", *FAMILIES, "compose, both orders", "largest spread"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, (tokens, mask) in ARMS.items():
        seeds = arms.get(arm, {})
        runs = [seeds[s] for s in sorted(seeds)]
        cells = [cell([measure(r, f) for r in runs]) for f in FAMILIES]
        swaps = [r["compose"]["swap_consistency"] for r in runs if "swap_consistency" in r["compose"]]
        swaps = cell(swaps) if len(swaps) == len(runs) else "—"  # an eval with no swapped pairs has no figure
        shown = "—"
        if len(runs) > 1:
            spread = max(max(measure(r, f) for r in runs) - min(measure(r, f) for r in runs) for f in FAMILIES)
            shown = f"{pct(spread)} points"
        lines.append(f"| {tokens} | {mask} | {', '.join(map(str, sorted(seeds))) or 'none'} | "
                     + " | ".join(cells) + f" | {swaps} | {shown} |")  # fmt: skip
    return lines


def against_off(arms: dict[str, dict[int, dict]]) -> list[str]:
    lines = []
    for arm in ("eq9", "intent"):
        common = sorted(set(arms.get(arm, {})) & set(arms.get("off", {})))
        if not common:
            continue
        parts = []
        for f in FAMILIES:
            d = [100 * (measure(arms[arm][s], f) - measure(arms["off"][s], f)) for s in common]
            parts.append(f"{f} " + "/".join(f"{x:+.0f}" for x in d))
        lines.append(f"- {ARMS[arm][1]} minus off, seed {', '.join(map(str, common))}: " + "; ".join(parts))
    return lines


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/ablation")
    if not folder.is_dir():
        sys.exit(f"No ablation folder {folder}: run bash examples/shapes_ablation.sh first")
    arms, missing = read(folder)
    print("\n".join(table(arms)))
    print()
    print("\n".join(against_off(arms)) or "No seed has both a mask arm and off evaluated yet.")
    if missing:
        print(f"\nNot evaluated yet: {', '.join(missing)}")


if __name__ == "__main__":
    main()
