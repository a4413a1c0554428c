#!/usr/bin/env bash
# Configures and builds a CMake preset (default: release) with at most 2 parallel jobs.
# Usage: scripts/build.sh [release|debug|asan] [ninja targets...]
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"
shift || true
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" -j "${BITDELTA_JOBS:-2}" ${1:+--target "$@"}
