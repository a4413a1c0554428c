#!/usr/bin/env bash
# Builds llama.cpp's llama-bench, llama-simple, llama-quantize and llama-server, once, into build/llamacpp from the source that
# the npm package node-llama-cpp@3.22.1 bundles (package/llama/gitRelease.bundle, a git bundle of
# llama.cpp): the baseline of the side-by-side benchmarks (issue 14). Native ISA, Release.
# Prints the folder holding the binaries. Takes ~10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=build/llamacpp
bin=$dir/llama.cpp/build/bin
# Without AMX: on the CPUs that have it (Sapphire Rapids and later) this llama.cpp's AMX matmul
# dies with SIGILL in its worker threads (`tilezero` in tinygemm_kernel_amx, tiles never
# configured in that thread; a standalone AMX program runs fine on the same machine), so the
# baseline is its AVX-512/VNNI path, the one it runs on machines without AMX. Ours uses AMX for
# BF16 matmuls and adapters' prompts there (inference_bench --no-amx measures it without).
flags=""
if grep -qw amx_int8 /proc/cpuinfo; then flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"; fi
if [ "$(cat "$dir/flags" 2>/dev/null)" != "$flags" ]; then rm -f "$bin/llama-bench"; fi
if [ ! -x "$bin/llama-bench" ] || [ ! -x "$bin/llama-simple" ] || [ ! -x "$bin/llama-quantize" ] ||
  [ ! -x "$bin/llama-server" ]; then
  mkdir -p "$dir"
  if [ ! -f "$dir/llama.cpp/CMakeLists.txt" ]; then
    (cd "$dir" &&
      npm pack --silent node-llama-cpp@3.22.1 >/dev/null &&
      tar xzf node-llama-cpp-3.22.1.tgz package/llama/gitRelease.bundle &&
      rm -rf llama.cpp && git clone -q package/llama/gitRelease.bundle llama.cpp)
  fi
  cmake -S "$dir/llama.cpp" -B "$dir/llama.cpp/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" >/dev/null
  cmake --build "$dir/llama.cpp/build" -j "${BITDELTA_JOBS:-2}" --target llama-bench llama-simple llama-quantize \
    llama-server >&2
  echo "$flags" > "$dir/flags"
fi
echo "$(cd "$bin" && pwd)"
