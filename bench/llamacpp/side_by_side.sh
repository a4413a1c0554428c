#!/usr/bin/env bash
# Ours against llama.cpp on exactly the same weights, in one run (issue 14): a random-weight
# Qwen3-0.6B (BF16) is written once and exported with `bitdelta export-gguf`; llama.cpp's
# `llama-quantize` makes its Q8_0 and Q4_0 files from that GGUF, and ours quantizes the same BF16
# weights at load (`--quantize`). For each format and thread count inference_bench (prefill of
# 128 tokens, then 64 decoded after them) and llama-bench (pp128; tg64 at depth 128, i.e. after a
# 128-token context as ours; 3 repetitions each) run alternately, twice;
# the best of each side is kept and the ratios printed as a Markdown table (ours ÷ llama.cpp).
# With BF16 among the formats, serve_bench then runs our server and llama-server side by side
# (SERVE_USERS=1,8 users, all at once and arriving 0.5 s apart) into a second table.
# Then the long-context table: BF16, a LONG=1024-token prompt's prefill (llama-bench pp1024) and
# 32 tokens decoded after it (tg32 at depth 1024), alternately, twice (LONG=0 skips it).
# Usage: bench/llamacpp/side_by_side.sh [--write-readme] [THREADS=1,2] [FORMATS=bf16,q8_0,q4_0]
# (FORMATS=none: only the long-context table; --write-readme: also replaces the tables between
# the side_by_side, side_by_side_serve and side_by_side_long markers in README.md)
# (LLAMACPP_BIN=DIR: llama.cpp binaries built elsewhere; otherwise bench/llamacpp/build.sh builds
# them once)
set -euo pipefail
cd "$(dirname "$0")/../.."
write_readme=0
if [ "${1:-}" = --write-readme ]; then
  write_readme=1
  shift
fi
threads=${1:-1,2}
formats=${2:-bf16,q8_0,q4_0}
long=${LONG:-1024}
if [ "$formats" = none ]; then formats=""; fi
bin=${LLAMACPP_BIN:-$(bench/llamacpp/build.sh)}
b=build/release/src/cli/bitdelta
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$b synth --like qwen3-0.6b --out "$work/qwen3" >/dev/null
$b export-gguf --model "$work/qwen3" --out "$work/bf16.gguf" >/dev/null
for f in ${formats//,/ }; do
  if [ "$f" != bf16 ]; then
    "$bin/llama-quantize" "$work/bf16.gguf" "$work/$f.gguf" "${f^^}" >/dev/null 2>&1
    # Ours: quantized once here (cached beside the model), so the runs below load it.
    $b generate --model "$work/qwen3" --quantize "$f" --prompt-ids 1 --max-tokens 1 \
      >/dev/null 2>&1
  fi
done
for round in 1 2; do
  for f in ${formats//,/ }; do
    q=$([ "$f" = bf16 ] && echo none || echo "$f")
    build/release/bench/inference_bench --model "$work/qwen3" --threads "$threads" \
      --quantize "$q" > "$work/ours.$f.$round.md" 2>/dev/null
    # Prefill from an empty context, as ours; decode after a 128-token context (llama-bench's
    # depth), as ours decodes after its 128-token prompt.
    "$bin/llama-bench" -m "$work/$f.gguf" -t "$threads" -p 128 -n 0 -r 3 -o json \
      > "$work/theirs.$f.$round.pp.json" 2>/dev/null
    "$bin/llama-bench" -m "$work/$f.gguf" -t "$threads" -p 0 -n 64 -d 128 -r 3 -o json \
      > "$work/theirs.$f.$round.tg.json" 2>/dev/null
  done
done
# table HEADER PREFIX:LABEL...: one Markdown row per thread count and PREFIX, the best of ours
# ($work/ours.PREFIX.*.md, inference_bench) and of llama.cpp's ($work/theirs.PREFIX.*.json:
# prefill from an empty context, decode at its depth), and ours ÷ theirs.
table() {
  python3 - "$work" "$@" <<'PY'
import glob, json, sys
work, header, runs = sys.argv[1], sys.argv[2], sys.argv[3:]
print(header)
print("|---|---|---|---|---|---|---|---|")
for run in runs:
    prefix, label = run.split(":")
    ours = {}
    for path in glob.glob(f"{work}/ours.{prefix}.*.md"):
        for line in open(path):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 4 and cells[0].isdigit():
                t = int(cells[0])
                pp, tg = float(cells[1]), float(cells[3])
                best = ours.get(t, (0, 0))
                ours[t] = (max(best[0], pp), max(best[1], tg))
    theirs = {}
    for path in glob.glob(f"{work}/theirs.{prefix}.*.json"):
        for r in json.load(open(path)):
            if r["n_prompt"] > 0 and r.get("n_depth", 0) != 0:
                continue  # (prefill is compared from an empty context)
            t = r["n_threads"]
            best = theirs.get(t, (0, 0))
            if r["n_prompt"] > 0:
                theirs[t] = (max(best[0], r["avg_ts"]), best[1])
            else:
                theirs[t] = (best[0], max(best[1], r["avg_ts"]))
    for t in sorted(ours):
        o, l = ours[t], theirs.get(t, (float("nan"), float("nan")))
        print(f"| {label} | {t} | {l[0]:.1f} | {o[0]:.1f} | {o[0] / l[0]:.2f}× | {l[1]:.2f} | {o[1]:.2f} | {o[1] / l[1]:.2f}× |")
PY
}
if [ -n "$formats" ]; then
  runs=()
  for f in ${formats//,/ }; do runs+=("$f:${f^^}"); done
  table "| weights | threads | llama.cpp pp128 | ours prefill 128 | ours ÷ llama.cpp | llama.cpp tg64 @ d128 | ours decode 64 after 128 | ours ÷ llama.cpp |" \
    "${runs[@]}" > "$work/table.md"
cat "$work/table.md"
fi
# Long context: prefill of a LONG-token prompt from an empty context, and decode after it.
if [ "$long" != 0 ]; then
  for round in 1 2; do
    build/release/bench/inference_bench --model "$work/qwen3" --threads "$threads" \
      --prompt "$long" --new 32 > "$work/ours.long.$round.md" 2>/dev/null
    "$bin/llama-bench" -m "$work/bf16.gguf" -t "$threads" -p "$long" -n 0 -r 2 -o json \
      > "$work/theirs.long.$round.pp.json" 2>/dev/null
    "$bin/llama-bench" -m "$work/bf16.gguf" -t "$threads" -p 0 -n 32 -d "$long" -r 2 -o json \
      > "$work/theirs.long.$round.tg.json" 2>/dev/null
  done
  n=$long
  table "| weights | threads | llama.cpp pp$n | ours prefill $n | ours ÷ llama.cpp | llama.cpp tg32 @ d$n | ours decode 32 after $n | ours ÷ llama.cpp |" \
    long:BF16 > "$work/long.md"
  cat "$work/long.md"
fi
# Serving: both servers on the same BF16 weights under the same streaming load, once with every
# user starting at once and once with users arriving 0.5 s apart (prompts prefill while others
# decode); serve_bench prints both servers' rows and ours ÷ theirs.
if [[ ",$formats," == *,bf16,* ]]; then
  for stagger in 0 0.5; do
    build/release/bench/serve_bench --users "${SERVE_USERS:-1,8}" --requests 2 --tokens 64 \
      --rounds 2 --stagger "$stagger" --llama-server "$bin/llama-server" 2>/dev/null |
      grep -v -e "adapter" -e '^$' -e '^\[' > "$work/serve.$stagger.md"
  done
  {
    echo "Every user at once:"
    echo
    tail -n +2 "$work/serve.0.md"  # the table, without serve_bench's line about the setup
    echo
    echo "Users arriving 0.5 s apart (\`--stagger 0.5\`):"
    echo
    tail -n +2 "$work/serve.0.5.md"
  } > "$work/serve.md"
  cat "$work/serve.md"
fi
replace() {  # the block between <!-- $1:begin ... --> and <!-- $1:end --> becomes file $2
  python3 - "$1" "$2" README.md <<'PY'
import os, sys
name, table, readme = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(readme).read()
begin = text.index(f"<!-- {name}:begin")
begin = text.index("\n", begin) + 1
end = text.index(f"<!-- {name}:end -->")
text = text[:begin] + open(table).read() + text[end:]
tmp = readme + ".tmp"
open(tmp, "w").write(text)
os.replace(tmp, readme)
PY
  echo "README.md: $1 replaced" >&2
}
if [ "$write_readme" = 1 ]; then
  if [ -f "$work/table.md" ]; then replace side_by_side "$work/table.md"; fi
  if [ -f "$work/long.md" ]; then replace side_by_side_long "$work/long.md"; fi
  if [ -f "$work/serve.md" ]; then replace side_by_side_serve "$work/serve.md"; fi
fi
