#!/usr/bin/env bash
# The paper's Table 4 at toy scale on the shapes world: attribute tokens x the group mask's three arms, two seeds.
#   off     the released training (its use_mask_attn is False)              --no-group-mask
#   eq9     eq. 9 as written: an attribute token sees no earlier group's image --group-mask-scope eq9 (the default)
#   intent  Fig. 2's intent: the token and its own group's image see each other --group-mask-scope intent
# Every arm reuses one base (autoencoder and tokenizer), copied once to runs/ablation/base from the main run's
# (runs/shapes/base, from `sigma shapes train`) or, without one, from the shipped model (the same encoder up to
# float16 rounding, so the same latents to learn; its decoder is the recipe's finetuned one), and gets the same
# budget (STEPS optimizer steps, the same rows). No arm runs the decoder stage.
# Without attribute tokens the group mask scopes nothing (tests/test_masks.py), so that arm is trained once per seed
# and stands for every mask setting.
#   bash examples/shapes_ablation.sh [STEPS] [SEEDS] [ARMS]
# ARMS, the third argument, picks the arms and their order (default "eq9 off intent notokens"): an arm takes about 66
# minutes alone on two cores (1.5-2 hours beside other work) and 7 more for its evaluation, so a session with time for
# one runs the one it lacks, e.g. `bash ... 12000 0 "notokens intent"`; finished arms are skipped either way.
#   python examples/shapes_ablation_table.py           # each arm's figures, its seeds and their spread
set -euo pipefail
STEPS="${1:-12000}"  # the recipe's MoT budget: at 4 000 the arms sit near the floor (docs/SHAPES.md)
SEEDS="${2:-0 1}"
ARMS="${3:-eq9 off intent notokens}"
[ $# -le 3 ] || { echo "usage: $0 [STEPS] [SEEDS] [ARMS]: quote several seeds or arms as one argument" >&2; exit 2; }
case "$STEPS" in  # every argument checked before hours of training, not when the loop reaches it
  '' | *[!0-9]*) echo "STEPS must be a whole number of optimizer steps, not '$STEPS'" >&2; exit 2 ;;
esac
for seed in $SEEDS; do
  case "$seed" in
    *[!0-9]*) echo "SEEDS must be whole numbers, not '$seed'" >&2; exit 2 ;;
  esac
done
for arm in $ARMS; do
  case "$arm" in
    eq9 | off | intent | notokens) ;;
    *) echo "unknown arm '$arm': choose among eq9 off intent notokens" >&2; exit 2 ;;
  esac
done
BASE=runs/ablation/base  # one fixed path: every arm's recipe.json records it, and a resumed arm must find it again
if [ ! -f "$BASE/ae.safetensors" ]; then
  from=runs/shapes/base
  [ -f "$from/ae.safetensors" ] || from="$("$(dirname "$(command -v sigma)")/python" -c \
    'from sigma_studio.model.hub import shipped_shapes_model as m; print(m())')"
  mkdir -p runs/ablation
  rm -rf "$BASE.tmp" "$BASE"  # a base without its autoencoder is a half copy: replaced, not copied into
  cp -r "$from" "$BASE.tmp"
  mv "$BASE.tmp" "$BASE"
fi
# 100 held-out rows a family, written once with and once without attribute tokens: each arm is read on rows in the
# form it was trained on (the same targets and seeds)
[ -f runs/ablation/eval-tokens/world.json ] || sigma shapes make --out runs/ablation/eval-tokens --rows 10 --eval-rows 100
[ -f runs/ablation/eval-notokens/world.json ] || sigma shapes make --out runs/ablation/eval-notokens --rows 10 \
  --eval-rows 100 --no-attribute-tokens
# eq. 9 and off first: the comparison Table 4 makes, so a half-finished ablation can already answer it for a seed
for seed in $SEEDS; do
  for arm in $ARMS; do
    case "$arm" in
      eq9) flags="" ;;
      off) flags="--no-group-mask" ;;
      intent) flags="--group-mask-scope intent" ;;
      notokens) flags="--no-attribute-tokens" ;;
    esac
    name="$arm-seed$seed"
    eval_rows=runs/ablation/eval-tokens/eval
    [ "$arm" = notokens ] && eval_rows=runs/ablation/eval-notokens/eval
    # SIGMA's five families only (Table 4 is a SIGMA ablation): no SIGMA-GEN rows in these runs
    # shellcheck disable=SC2086
    sigma shapes train --out "runs/ablation/$name" --steps "$STEPS" --base "$BASE" --seed "$seed" --sigmagen-rows 0 \
      --decoder-steps 0 $flags
    [ -f "runs/ablation/$name/eval.json" ] ||  # evaluated earlier: a rerun goes straight to the next arm
      sigma shapes eval --model "runs/ablation/$name/model" --data "$eval_rows" --json "runs/ablation/$name/eval.json"
  done
done
