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
