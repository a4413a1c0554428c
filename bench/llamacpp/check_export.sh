#!/usr/bin/env bash
# Checks `bitdelta export-gguf` against llama.cpp itself: the real stories260K (llama
# architecture, a byte-fallback vocabulary, q/k rows permuted for llama.cpp's RoPE) and a
# random-weight Qwen3-0.6B (qwen3, the real Qwen3 vocabulary, BF16) are exported, and
# llama.cpp's llama-simple must continue a prompt greedily exactly as `bitdelta generate` does.
# Usage: bench/llamacpp/check_export.sh   (LLAMACPP_BIN=DIR to use llama.cpp binaries built
# elsewhere; otherwise bench/llamacpp/build.sh builds them). Exit 1 on any difference.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${LLAMACPP_BIN:-$(bench/llamacpp/build.sh)}
b=build/release/src/cli/bitdelta
shared=${BITDELTA_SHARED_ASSETS:-../shared/assets}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$b import-llama2c --model "$shared/models/stories260K/stories260K.bin" \
  --tokenizer "$shared/models/stories260K/tok512.bin" --out "$work/stories" >/dev/null
$b synth --like qwen3-0.6b --out "$work/qwen3" >/dev/null
status=0
check() {  # model folder, prompt, tokens
  $b export-gguf --model "$1" --out "$1.gguf"
  theirs=$("$bin/llama-simple" -m "$1.gguf" -n "$3" "$2" 2>/dev/null | sed 's/^<s> //')
  ours=$($b generate --model "$1" --prompt "$2" --max-tokens "$3" 2>/dev/null)
  if [ "$theirs" == "$ours" ]; then
    echo "same: $(basename "$1"): $ours"
  else
    echo "DIFFERENT: $(basename "$1")"; echo "  llama.cpp: $theirs"; echo "  bitdelta:  $ours"
    status=1
  fi
}
check "$work/stories" "Once upon a time" 40
check "$work/qwen3" "Hello, my name is" 12
exit $status
