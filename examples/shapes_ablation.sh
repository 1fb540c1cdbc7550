#!/usr/bin/env bash
# The paper's Table 4 at toy scale on the shapes world: attribute tokens on/off x group-scoped mask on/off.
# Every arm reuses the autoencoder and tokenizer of the main run (runs/shapes/base, from `sigma shapes train`) and
# gets the same budget (STEPS optimizer steps of 768 packed tokens, the same seed, the same rows). Without
# attribute tokens the group mask scopes nothing (tests/test_masks.py), so that arm is trained once and stands for
# both of its mask settings.
#   bash examples/shapes_ablation.sh [STEPS]        # then read runs/ablation/*/eval.json
set -euo pipefail
STEPS="${1:-2000}"
BASE=runs/shapes/base
for arm in "tokens-mask:" "tokens-nomask:--no-group-mask" "notokens:--no-attribute-tokens"; do
  name="${arm%%:*}"; flags="${arm#*:}"
  # shellcheck disable=SC2086
  sigma shapes train --out "runs/ablation/$name" --steps "$STEPS" --base "$BASE" $flags
  sigma shapes eval --model "runs/ablation/$name/model" --data "runs/ablation/$name/data/eval" \
    --json "runs/ablation/$name/eval.json"
done
