"""Where in the flow does a family's miss arise? Each held-out row is generated as ``sigma shapes eval`` generates it,
and at chosen steps of its 50 the clean picture the model predicts there (``x0 = x_t - t v``, the guided velocity
``v`` of that step) is decoded and read by the strict reader, beside the final picture.

    python examples/shapes_flow_read.py MODEL DATA ROWS FAMILY[,FAMILY...]

MODEL: ``shapes`` or a model folder; DATA: a folder of held-out parquet rows (``runs/probe/eval/eval``: 100 rows a
family, ``sigma shapes make --eval-rows 100``); ROWS: how many rows a family. Row ``k`` is generated at seed ``k``
with the default sampler, as the evaluation does, so the final column is the evaluation's figure.

If the predicted clean picture is right early and the final one is not, the sampler loses what the network knew
(a guidance or schedule question); if it is wrong from the first step, the network's prediction from the
conditions is (docs/SHAPES.md, "Where in the flow").
"""

from __future__ import annotations

import sys
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import torch

from sigma_studio.model import load_pipeline
from sigma_studio.model.config import GenerationConfig
from sigma_studio.model.run import sampler
from sigma_studio.model.shapes.evaluate import generate_row, load_meta, score

AT = (0, 2, 5, 10, 15, 20, 30, 40, 48)  # the steps read (of the default 50: 49 Euler steps)
KEYS = ("ok", "shape", "colour", "placed")


@contextmanager
def recorded_velocities(out: list[torch.Tensor]):
    """Every guided velocity the sampler integrates, in order, appended to ``out`` (the sampler's ``combine`` wrapped
    for the duration: the one place all branches meet, so the figures read what the pipeline draws with)."""
    combine = sampler.combine

    def keep(*args, **kwargs):
        v = combine(*args, **kwargs)
        out.append(v.detach().clone())
        return v

    sampler.combine = keep
    try:
        yield
    finally:
        sampler.combine = combine


def clean_predictions(pipe, family: str, k: int, rec: dict, cfg: GenerationConfig):
    """Row ``k`` generated at seed ``k``: (the predicted clean picture at each step of :data:`AT`, the state the
    sampler started from, rebuilt backwards from its last, and the result)."""
    velocities: list[torch.Tensor] = []
    final: dict[str, object] = {}
    decode = pipe.decode

    def keep_final(x: torch.Tensor, grid: tuple[int, int]):
        final["x"], final["grid"] = x.detach().clone(), grid
        return decode(x, grid)

    pipe.decode = keep_final
    try:
        with recorded_velocities(velocities):
            result = generate_row(pipe, f"{family}-{k:06d}", rec, cfg.replace(seed=k))
    finally:
        del pipe.decode  # the class's own method again
    t = sampler.timesteps(cfg.steps, cfg.timestep_shift)
    states = [final["x"]]  # the state before each step, rebuilt backwards from the last
    for i in reversed(range(len(velocities))):
        states.insert(0, states[0] + velocities[i] * (t[i] - t[i + 1]))
    pictures = {i: decode(states[i] - t[i] * velocities[i], final["grid"]) for i in AT}
    return pictures, states[0], result


def read_row(pipe, family: str, k: int, rec: dict, cfg: GenerationConfig) -> dict:
    """Verdicts of the predicted clean picture at each step of :data:`AT` and of the final picture (``"final"``)."""
    pictures, _, result = clean_predictions(pipe, family, k, rec, cfg)
    meta = load_meta(rec["meta"])
    return {i: score(img, meta, family) for i, img in pictures.items()} | {"final": score(result.image, meta, family)}


def main(model: str, data: Path, rows: int, families: list[str]) -> None:
    missing = [f for f in families if not (data / f"{f}.parquet").is_file()]
    if missing:  # before the model loads: one line, not a traceback
        names = ", ".join(f"{f}.parquet" for f in missing)
        sys.exit(f"{data} has no {names}: pass the eval/ folder `sigma shapes make --eval-rows N` writes")
    pipe, cfg = load_pipeline(model), GenerationConfig()
    t = sampler.timesteps(cfg.steps, cfg.timestep_shift)
    for family in families:
        tally: dict[object, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        recs = pq.read_table(data / f"{family}.parquet").to_pylist()[:rows]
        for k, rec in enumerate(recs):
            for step, verdict in read_row(pipe, family, k, rec, cfg).items():
                for key in KEYS:
                    tally[step][key] += bool(verdict[key])
        print(f"{family}, {len(recs)} rows: the predicted clean picture at each step, rows right (of {len(recs)})")
        print("   step      t    ok  shape  colour  placed")
        for step in (*AT, "final"):
            at = f"{float(t[step]):.2f}" if step != "final" else "0"
            d = tally[step]
            print(f"  {step!s:>5}  {at:>5}  {d['ok']:4d}  {d['shape']:5d}  {d['colour']:6d}  {d['placed']:6d}")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(","))
