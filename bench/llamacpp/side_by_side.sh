#!/usr/bin/env bash
# Ours against llama.cpp on exactly the same weights, in one run (issue 14): a random-weight
# Qwen3-0.6B (BF16) is written once, exported with `bitdelta export-gguf`, and for each thread
# count inference_bench (prefill of 128 tokens, 64 decoded) and llama-bench (pp128, tg64, 3
# repetitions) run alternately, twice; the best of each side is kept and the ratios printed as a
# Markdown table (ours ÷ llama.cpp).
# Usage: bench/llamacpp/side_by_side.sh [THREADS=1,2]   (LLAMACPP_BIN=DIR: llama.cpp binaries
# built elsewhere; otherwise bench/llamacpp/build.sh builds them once)
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=${1:-1,2}
bin=${LLAMACPP_BIN:-$(bench/llamacpp/build.sh)}
b=build/release/src/cli/bitdelta
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$b synth --like qwen3-0.6b --out "$work/qwen3" >/dev/null
$b export-gguf --model "$work/qwen3" --out "$work/qwen3.gguf" >/dev/null
for round in 1 2; do
  build/release/bench/inference_bench --model "$work/qwen3" --threads "$threads" \
    > "$work/ours.$round.md" 2>/dev/null
  "$bin/llama-bench" -m "$work/qwen3.gguf" -t "$threads" -p 128 -n 64 -r 3 -o json \
    > "$work/theirs.$round.json" 2>/dev/null
done
python3 - "$work" <<'PY'
import glob, json, sys
work = sys.argv[1]
ours = {}
for path in glob.glob(f"{work}/ours.*.md"):
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].isdigit():
            t = int(cells[0])
            pp, tg = float(cells[1]), float(cells[3])
            best = ours.get(t, (0, 0))
            ours[t] = (max(best[0], pp), max(best[1], tg))
theirs = {}
for path in glob.glob(f"{work}/theirs.*.json"):
    for r in json.load(open(path)):
        t = r["n_threads"]
        best = theirs.get(t, (0, 0))
        if r["n_prompt"] > 0:
            theirs[t] = (max(best[0], r["avg_ts"]), best[1])
        else:
            theirs[t] = (best[0], max(best[1], r["avg_ts"]))
print("| threads | llama.cpp pp128 | ours prefill 128 | ours ÷ llama.cpp | llama.cpp tg64 | ours decode 64 | ours ÷ llama.cpp |")
print("|---|---|---|---|---|---|---|")
for t in sorted(ours):
    o, l = ours[t], theirs.get(t, (float("nan"), float("nan")))
    print(f"| {t} | {l[0]:.1f} | {o[0]:.1f} | {o[0] / l[0]:.2f}× | {l[1]:.2f} | {o[1]:.2f} | {o[1] / l[1]:.2f}× |")
PY
