#!/usr/bin/env bash
# Can the shipped shapes model learn one family when it trains on nothing else? A one-family finetune of the shipped
# weights (or of them grown twice as deep, computing the same until trained) on fresh rows, read on held-out pairs
# and on training pairs in new rows (docs/SHAPES.md, "One family at a time").
#   bash examples/shapes_probe.sh FAMILY [STEPS] [DEPTH] [AUX]
# FAMILY: compose | select | layout | background | text, or all (every family in the world's mix, read on held-out
# pairs only), or find (with AUX find, find+shades or find+plans: the find rows alone), or boxed (with AUX boxed: the
# boxed rows alone).
# STEPS: optimizer steps (default 3000, about 9 minutes on two cores; 18 grown).
# DEPTH: shipped (the default) | grown (every layer followed by a copy whose outputs are zero:
# finetune.checkpoint.grow_depth).
# AUX:
#   none (the default)
#   describe: 20 000 rows of the training-only describe family beside the others
#   plans: the same fresh rows, each ending with its plan, read with --think (the model writes its plan, then draws)
#   plans+describe: plans and describe rows (with describe rows or plans, every row's text is under cross-entropy)
#   plans+shades: plans on the rows of shades (the plan names the colour's name, the picture shows a shade of it)
#   shades: the same fresh rows, half of compose's, select's, layout's and background's drawn in random shades
#   find: 20 000 rows of the training-only find family beside the others (select's scene, its object kept in place)
#   find+shades: find rows beside the rows of shades, the find rows shaded too
#   find+plans: the find rows ending with their plan, which names the object's place, under cross-entropy; --think
#   boxed: 20 000 rows of the training-only boxed family beside the others (a named shape drawn filling a layout box)
#   boxed+drawn: the same, with a training-only head that reads the target's shape off every token being drawn,
#     after layer 2 (--label-weight 0.5 --label-sets drawn)
#   boxed+drawn+colour: the same, with a second head that reads the target's colour off the same tokens
#     (--label-sets drawn,drawn-colour)
#   plans+boxed: the rows of plans, and the boxed rows ending with their plans too; read with --think
#   place-plans: the fresh rows, select's ending with a plan that names where the named object stands in the
#     reference, not its colour; read with --think
#   scene-plans: the same, the plan naming every object of the reference left to right (the describe family's words)
#   scene+colour-plans: that plan, then the named object's colour plan (', so the star is red')
#   labels: the same fresh rows, with training-only heads that read each select reference token's shape and whether
#     it is the named object (and each background reference token's shape) after layer 1 (--label-weight 0.5)
#   labels+fair: the same on fresh rows whose select scenes draw fair distractors (sigma shapes make
#     --fair-distractors: no other object in a colour held out with the named shape)
#   rope2d: the same fresh rows, image tokens with rotary positions in rows and columns, trained and read through
#     examples/shapes_rope2d.py (a patch of the running process, not a model setting)
#   shift3: the same fresh rows, the noise levels drawn at timestep shift 3 (--timestep-shift 3: the sampler's
#     shift), not 1, so that more of the training steps are at the high noise where the sampler's first steps are
#   shift10: the same fresh rows, select's and layout's alone drawn at timestep shift 10 (--family-shift: about half
#     of their rows above t = 0.9, against 1.4 % at shift 1), the others at 1
#   ARM+shift10: any arm above (but rope2d and the shifts) with select's and layout's rows at shift 10, e.g.
#     labels+fair+shift10
# Writes runs/probe/FAMILY-DEPTH[-AUX]/{eval,seen}.json, and with find or boxed rows also find-{eval,seen}.json or
# boxed-{eval,seen}.json (that family itself read on 100 rows of held-out, then training, pairs); rerun to resume.
set -euo pipefail
FAMILY="${1:-}"
STEPS="${2:-3000}"
DEPTH="${3:-shipped}"
AUX="${4:-none}"
shifted=()  # ARM+shift10: the arm, select's and layout's rows at timestep shift 10
case "$AUX" in
  *+shift10) shifted=(--family-shift select=10 --family-shift layout=10); AUX="${AUX%+shift10}" ;;
esac
[ $# -ge 1 ] && [ $# -le 4 ] || { echo "usage: $0 FAMILY [STEPS] [DEPTH] [AUX]" >&2; exit 2; }
case "$FAMILY" in
  compose | select | layout | background | text | all) ;;
  find)
    [[ "${4:-}" == find* ]] ||
      { echo "FAMILY find trains on find rows alone: give AUX find, find+shades or find+plans" >&2; exit 2; } ;;
  boxed)
    [[ "${4:-}" == boxed* ]] ||
      { echo "FAMILY boxed trains on boxed rows alone: give AUX boxed, boxed+drawn or boxed+drawn+colour" >&2
        exit 2; } ;;
  *) echo "unknown family '$FAMILY': choose among compose select layout background text all find boxed" >&2
     exit 2 ;;
esac
case "$STEPS" in
  '' | *[!0-9]*) echo "STEPS must be a whole number of optimizer steps, not '$STEPS'" >&2; exit 2 ;;
esac
case "$DEPTH" in
  shipped | grown) ;;
  *) echo "DEPTH is shipped or grown, not '$DEPTH'" >&2; exit 2 ;;
esac
case "$AUX" in
  none | describe | plans | plans+describe | plans+shades | shades | find | find+shades | find+plans | place-plans \
    | scene-plans | scene+colour-plans | labels | labels+fair | boxed | boxed+drawn | boxed+drawn+colour \
    | plans+boxed | rope2d | shift3 | shift10) ;;
  *) echo "AUX is none, describe, plans, plans+describe, plans+shades, shades, find, find+shades, find+plans," \
       "place-plans, scene-plans, scene+colour-plans, labels, labels+fair, boxed, boxed+drawn," \
       "boxed+drawn+colour, plans+boxed, rope2d, shift3 or shift10," \
       "not '$AUX'" >&2
     exit 2 ;;
esac
case "${#shifted[@]}:$AUX" in
  [1-9]*:none | [1-9]*:rope2d | [1-9]*:shift3 | [1-9]*:shift10)
    echo "+shift10 goes after another arm (not none, rope2d or a shift), not '$AUX+shift10'" >&2; exit 2 ;;
esac
PY="$(dirname "$(command -v sigma)")/python"
mkdir -p runs/probe
# 100 000 fresh rows (seed 11: the shipped MoT trained on seed 0's), 20 000 of them select's and layout's: each
# row of a family trained on about once in 3 000 steps
[ -f runs/probe/fresh/world.json ] || sigma shapes make --out runs/probe/fresh --rows 100000 --eval-rows 2 --seed 11
# the held-out pairs of the tables (`sigma shapes eval`'s own 100 rows a family) and training pairs in new rows
[ -f runs/probe/eval/world.json ] || sigma shapes make --out runs/probe/eval --rows 10 --eval-rows 100
[ -f runs/probe/seen/world.json ] || sigma shapes make --out runs/probe/seen --eval-rows 100 --eval-pairs seen
model=shapes
if [ "$DEPTH" = grown ]; then
  model=runs/probe/grown
  [ -f "$model/ema.safetensors" ] || "$PY" -c 'import sys; from pathlib import Path
from sigma_studio.finetune.checkpoint import grow_depth
from sigma_studio.model.hub import shipped_shapes_model
grow_depth(shipped_shapes_model(), Path(sys.argv[1]))' "$model"
fi
out="runs/probe/$FAMILY-$DEPTH"
rows=fresh
aux=()
think=()
[ "$AUX" != none ] && out="$out-$AUX"
[ ${#shifted[@]} -gt 0 ] && out="$out+shift10"
case "$AUX" in
  labels) aux=(--label-weight 0.5 --label-layer 1) ;;
  shift3) aux=(--timestep-shift 3) ;;
  shift10) aux=(--family-shift select=10 --family-shift layout=10) ;;
  labels+fair)
    aux=(--label-weight 0.5 --label-layer 1)
    rows=fresh-fair
    [ -f runs/probe/fresh-fair/world.json ] ||
      sigma shapes make --out runs/probe/fresh-fair --rows 100000 --eval-rows 2 --seed 11 --fair-distractors
    ;;
  describe | plans | plans+describe) aux=(--text-loss) ;;
  find+plans) aux=(--text-loss); think=(--think) ;;
  place-plans | scene-plans | scene+colour-plans)
    aux=(--text-loss)
    think=(--think)
    rows="fresh-$AUX"
    [ -f "runs/probe/$rows/world.json" ] ||
      sigma shapes make --out "runs/probe/$rows" --rows 100000 --eval-rows 2 --seed 11 --plans "select:${AUX%-plans}"
    ;;
  shades | find+shades)
    rows=fresh-shades
    [ -f runs/probe/fresh-shades/world.json ] ||
      sigma shapes make --out runs/probe/fresh-shades --rows 100000 --eval-rows 2 --seed 11 --shades 0.5
    ;;
  plans+shades)
    aux=(--text-loss)
    think=(--think)
    rows=fresh-plans-shades
    [ -f runs/probe/fresh-plans-shades/world.json ] ||
      sigma shapes make --out runs/probe/fresh-plans-shades --rows 100000 --eval-rows 2 --seed 11 --plans all \
        --shades 0.5
    ;;
esac
extra=""  # a training-only family's world, linked in beside the rows
extra_args=()
case "$AUX" in
  describe | plans+describe) extra=describe ;;
  find) extra=find ;;
  boxed) extra=boxed ;;
  boxed+drawn) extra=boxed; aux=(--label-weight 0.5 --label-layer 2 --label-sets drawn) ;;
  boxed+drawn+colour) extra=boxed; aux=(--label-weight 0.5 --label-layer 2 --label-sets drawn,drawn-colour) ;;
  plans+boxed) extra=boxed-plans; extra_args=(--plans boxed); aux=(--text-loss) ;;
  find+shades) extra=find-shades; extra_args=(--shades 0.5) ;;
  find+plans) extra=find-plans; extra_args=(--plans find) ;;
esac
case "$AUX" in
  plans | plans+describe | plans+boxed)
    rows=fresh-plans
    think=(--think)
    # the fresh rows again (the same seed draws the same rows), each training row ending with its plan
    [ -f runs/probe/fresh-plans/world.json ] ||
      sigma shapes make --out runs/probe/fresh-plans --rows 100000 --eval-rows 2 --seed 11 --plans all
    ;;
esac
dataset="runs/probe/$rows/train"
if [ -n "$extra" ]; then
  family="${extra%%-*}"
  [ -f "runs/probe/$extra/world.json" ] ||
    sigma shapes make --out "runs/probe/$extra" --rows 10 --eval-rows 2 "--$family-rows" 20000 --seed 11 \
      "${extra_args[@]}"
  dataset="runs/probe/$rows-$extra"
  if [ ! -d "$dataset" ]; then  # the family rows and the extra rows side by side (links, not copies)
    mkdir -p "$dataset.tmp"
    for f in "runs/probe/$rows/train/"*.parquet "runs/probe/$extra/train/$family.parquet"; do
      ln -s "$PWD/$f" "$dataset.tmp/$(basename "$f")"
    done
    mv "$dataset.tmp" "$dataset"
  fi
fi
others=()
read_only=()
if [ "$FAMILY" != all ]; then
  read_only=(--family "$FAMILY")
  for f in compose select layout background text; do
    [ "$f" = "$FAMILY" ] || others+=(--family-weight "$f=0")
  done
fi
pairs_read=(eval seen)
[ "$FAMILY" = all ] && pairs_read=(eval)  # 500 rows: 7 minutes a read
case "$FAMILY" in find | boxed) pairs_read=() ;; esac
resume=()
[ -f "$out/latest" ] && resume=(--resume)
cli=(sigma)  # what trains and reads the probe's model
[ "$AUX" = rope2d ] && cli=("$PY" "$(dirname "$0")/shapes_rope2d.py")
# the recipe's finetune settings at a lower peak (the curriculum's): lr 3e-4, 100 warm-up steps, EMA 0.995
[ -f "$out/trained" ] || {
  "${cli[@]}" finetune --out "$out" --dataset "$dataset" --model "$model" --init weights --steps "$STEPS" \
    --max-tokens 1024 --lr 3e-4 --min-lr 1e-5 --warmup 100 --ema 0.995 --held-out 0 --group-mask \
    --attribute-projection --no-gradient-checkpointing --save-every 500 --seed 0 \
    "${resume[@]}" "${others[@]}" "${aux[@]}" "${shifted[@]}"
  touch "$out/trained"
}
[ -f "$out/model/ema.safetensors" ] || "$PY" -c 'import sys; from pathlib import Path
from sigma_studio.finetune.checkpoint import export
export(Path(sys.argv[1]), Path(sys.argv[2]))' "$out" "$out/model"
for pairs in "${pairs_read[@]}"; do
  [ -f "$out/$pairs.json" ] ||
    "${cli[@]}" shapes eval --model "$out/model" --data "runs/probe/$pairs/eval" "${read_only[@]}" "${think[@]}" \
      --json "$out/$pairs.json"
done
# find itself (in place: the named object) or boxed itself (the named pair in its box), held-out or training pairs
if [ -n "$extra" ] && { [ "$family" = find ] || [ "$family" = boxed ]; }; then
  for pairs in eval seen; do
    [ -f "runs/probe/$family-$pairs/$family.parquet" ] || "$PY" -c 'import sys
from sigma_studio.model.data.dataset import write_parquet
from sigma_studio.model.shapes.tasks import examples
write_parquet(sys.argv[1], examples(sys.argv[3], sys.argv[2], 100, 0))' \
      "runs/probe/$family-$pairs/$family.parquet" "$pairs" "$family"
    [ -f "$out/$family-$pairs.json" ] ||
      sigma shapes eval --model "$out/model" --data "runs/probe/$family-$pairs" "${think[@]}" \
        --json "$out/$family-$pairs.json"
  done
fi
