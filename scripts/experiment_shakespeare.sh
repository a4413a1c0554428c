#!/usr/bin/env bash
# The real-weights BitDelta experiment (issue 5; table in README "Quality: how much of a fine-tune
# survives 1 bit"). Fine-tunes stories260K on the first 90% of the tokens of the first 300,000
# characters of tinyshakespeare.txt ("gentle": lr 2e-4, 300 steps; "aggressive": lr 1e-3, 600
# steps; both batch 16 x 128, full fine-tuning with AdamW), compresses each with per-tensor and
# per-row scales, calibrates with several recipes, and evaluates every variant on 16
# non-overlapping 128-token windows from the start of the held-out last 10%.
#
#   scripts/experiment_shakespeare.sh [OUT_DIR]     (about 15 minutes on 2 cores)
#
# Prints the table as Markdown and writes it to OUT_DIR/table.md (default out/experiment).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${BITDELTA_BIN:-build/release/src/cli/bitdelta}"
assets="${BITDELTA_SHARED_ASSETS:-../shared/assets}"
out="${1:-out/experiment}"
[ -x "$bin" ] || scripts/build.sh release
mkdir -p "$out"

head -c 300000 "$assets/corpora/tinyshakespeare.txt" > "$out/shakespeare300k.txt"
data="$out/shakespeare300k.txt"
generic="$assets/corpora/web_sentences_en.txt"
[ -d "$out/base" ] || $bin import-llama2c --model "$assets/models/stories260K/stories260K.bin" \
  --tokenizer "$assets/models/stories260K/tok512.bin" --out "$out/base" > /dev/null

finetune() {  # name lr steps
  [ -f "$out/$1/model.safetensors" ] && return
  echo "fine-tuning $1 (lr $2, $3 steps)" >&2
  $bin finetune --model "$out/base" --data "$data" --token-range 0:0.9 --out "$out/$1" \
    --lr "$2" --steps "$3" --batch 16 --seq-len 128 --log-every 100
}
finetune gentle 2e-4 300
finetune aggressive 1e-3 600

evaluate() {  # finetune adapter-or-empty
  local args=(--base "$out/base" --finetuned "$out/$1" --data "$data" --token-range 0.9:1
              --windows 16 --seq-len 128 --json)
  [ -n "$2" ] && args+=(--adapter "$2")
  $bin eval "${args[@]}"
}
field() {  # json-text python-expression
  python3 -c "import json,sys; d=json.loads(sys.argv[1]); print($2)" "$1"
}

table="$out/table.md"
{
  echo "| fine-tune | scales | recipe | NLL | quality retained | top-1 agreement | KL(ft ‖ BitDelta) |"
  echo "|---|---|---|---|---|---|---|"
} > "$table"
for ft in gentle aggressive; do
  ref=$(evaluate $ft "")
  echo "| $ft | — | base model | $(field "$ref" "'%.3f' % d['models']['base']['nll']") | 0% | $(field "$ref" "'%.1f%%' % (100*d['base_vs_finetuned']['top1'])") | $(field "$ref" "'%.4f' % d['base_vs_finetuned']['kl']") |" >> "$table"
  echo "| $ft | — | fine-tune | $(field "$ref" "'%.3f' % d['models']['finetuned']['nll']") | 100% | 100% | 0 |" >> "$table"
  for gran in tensor row; do
    raw="$out/$ft-$gran.bdelta"
    $bin compress --base "$out/base" --finetuned "$out/$ft" --out "$raw" --granularity "$gran" > /dev/null
    # recipe name | calibrate arguments (empty: none)
    while IFS='|' read -r name args; do
      adapter="$raw"
      if [ -n "$args" ]; then
        adapter="$out/$ft-$gran-$(echo "$name" | tr -c 'a-z0-9\n' '-').bdelta"
        # shellcheck disable=SC2086
        $bin calibrate --quiet --base "$out/base" --finetuned "$out/$ft" --adapter "$raw" \
          --out "$adapter" $args > /dev/null
      fi
      r=$(evaluate $ft "$adapter")
      echo "| $ft | per-$gran | $name | $(field "$r" "'%.3f' % d['models']['bitdelta']['nll']") | $(field "$r" "'%.1f%%' % (100*d['quality_retained'])") | $(field "$r" "'%.1f%%' % (100*d['bitdelta_vs_finetuned']['top1'])") | $(field "$r" "'%.4f' % d['bitdelta_vs_finetuned']['kl']") |" >> "$table"
      echo "done: $ft per-$gran $name" >&2
    done <<EOF
no calibration|
paper: MSE, generic text, 200 steps, lr 1e-4|--data $generic
activation-aware init only (no steps)|--data $generic --steps 0 --init activation-aware
KL, generic text, 200 steps, lr 1e-4|--data $generic --loss kl
MSE, user's data, 200 steps, lr 1e-4|--data $data --token-range 0:0.9
KL, user's data, 400 steps, lr 1e-3|--data $data --token-range 0:0.9 --loss kl --steps 400 --lr 1e-3
activation-aware + KL, user's data, 400 steps, lr 1e-3|--data $data --token-range 0:0.9 --loss kl --steps 400 --lr 1e-3 --init activation-aware
EOF
  done
done
cat "$table"
