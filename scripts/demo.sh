#!/usr/bin/env bash
# The main job end to end on embedded defaults: set up, build, import the shared stories260K
# llama2.c model into a Hugging Face folder, describe it, tokenize with it, and generate a story.
# Output goes to ./out/demo (override with BITDELTA_DEMO_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh release bitdelta
bin=build/release/src/cli/bitdelta
assets="${BITDELTA_SHARED_ASSETS:-../shared/assets}"
out="${BITDELTA_DEMO_DIR:-out/demo}"
mkdir -p "$out"

echo "== 1. import the llama2.c stories260K model as a Hugging Face Llama folder"
$bin import-llama2c --model "$assets/models/stories260K/stories260K.bin" \
  --tokenizer "$assets/models/stories260K/tok512.bin" --out "$out/stories260K"

echo "== 2. what it holds"
$bin info "$out/stories260K"

echo "== 3. tokenize and decode with its tokenizer"
ids=$($bin tokenize --model "$out/stories260K" --text "Once upon a time, there was a little girl named Lily.")
echo "ids: $ids"
$bin tokenize --model "$out/stories260K" --decode --text "$ids"

echo "== 4. generate a story (greedy; llama2.c's reference output starts the same way)"
$bin generate --model "$out/stories260K" --prompt "Once upon a time" --max-tokens 200

echo "== 5. and a sampled one (temperature 0.8, top-p 0.9, seed 42: reproducible)"
$bin generate --model "$out/stories260K" --prompt "Once upon a time" --max-tokens 200 \
  --temperature 0.8 --top-p 0.9 --seed 42

echo "== 6. personalize: fine-tune on a user's data (the first 60,000 characters of Shakespeare,"
echo "      90% of it for training, the rest held out)"
head -c 60000 "$assets/corpora/tinyshakespeare.txt" > "$out/user_shakespeare.txt"
$bin finetune --model "$out/stories260K" --data "$out/user_shakespeare.txt" --token-range 0:0.9 \
  --out "$out/user_finetune" --steps 200 --batch 16 --seq-len 128 --lr 1e-3 --log-every 50

echo "== 7. compress the fine-tune to 1 bit (per-row scales) and calibrate the scales on the"
echo "      user's data (scale distillation, KL, 400 steps)"
$bin compress --base "$out/stories260K" --finetuned "$out/user_finetune" \
  --out "$out/user.bdelta" --granularity row --adapter-id general/demo-user/v1 \
  --calibrate-data "$out/user_shakespeare.txt" --calibrate-token-range 0:0.9 --calibrate-loss kl --calibrate-steps 400 \
  --calibrate-lr 1e-3

echo "== 8. quality on the held-out 10%: base, fine-tune, and base + 1-bit adapter"
$bin eval --base "$out/stories260K" --finetuned "$out/user_finetune" --adapter "$out/user.bdelta" \
  --data "$out/user_shakespeare.txt" --token-range 0.9:1 --windows 0

echo "== 9. the same prompt through the base and through the user's adapter"
$bin generate --model "$out/stories260K" --prompt "ROMEO:" --max-tokens 60
$bin generate --model "$out/stories260K" --adapter "$out/user.bdelta" --prompt "ROMEO:" --max-tokens 60

echo "== 10. serve: the base and the user's adapter from one process (OpenAI-compatible API)"
rm -rf "$out/store"
$bin store add --store "$out/store" "$out/user.bdelta" --model "$out/stories260K"
$bin serve --model "$out/stories260K" --store "$out/store" --port 0 > "$out/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/^serving .*:\([0-9]*\)$/\1/p' "$out/serve.log")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$out/serve.log"; exit 1; }
for model in stories260K general/demo-user; do
  echo "-- model $model:"
  curl -sS "http://127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' \
    -d "{\"model\": \"$model\", \"prompt\": \"ROMEO:\", \"max_tokens\": 40, \"temperature\": 0}" |
    python3 -c 'import json, sys; r = json.load(sys.stdin); print(r["choices"][0]["text"]); print("usage:", r["usage"])'
done
kill -TERM $server
wait $server
