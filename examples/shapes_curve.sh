#!/usr/bin/env bash
# A learning-curve point of a running `sigma shapes train`: the newest checkpoint's EMA weights, scored on 20 held-out
# rows a family and 10 scenes a subject count at 20 steps (one thread, so it can run beside the training).
#   bash examples/shapes_curve.sh runs/shapes s6000        # then read runs/shapes/curve/s6000/*.txt
# SIGMA names the command that reads it (default: sigma), e.g. SIGMA="python examples/shapes_rope2d.py" for a run
# trained under that probe's patch, which must be read under it too.
set -euo pipefail
RUN=$1
TAG=$2
OUT="$RUN/curve/$TAG"
read -r -a SIGMA <<< "${SIGMA:-sigma}"
export OMP_NUM_THREADS=1
python - "$RUN" "$OUT" <<'PY'
import sys
from pathlib import Path

from sigma_studio.finetune.shapes_recipe import export
from sigma_studio.model.presets import shapes

print(export(Path(sys.argv[1]) / "train", Path(sys.argv[2]) / "model", skills=shapes().skills))
PY
"${SIGMA[@]}" shapes eval --model "$OUT/model" --per-family 20 --steps 20 --json "$OUT/families.json" > "$OUT/families.txt"
"${SIGMA[@]}" sigmagen eval --model "$OUT/model" --data "$RUN/data/sigmagen-eval" --per-count 10 --steps 20 \
  --json "$OUT/sigmagen.json" > "$OUT/sigmagen.txt"
