#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (every label, slow included).
# Usage: scripts/test.sh [release|debug|asan] [extra ctest args...]
#   BITDELTA_TEST_LABEL=fast scripts/test.sh   runs only the fast tests.
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"
shift || true
scripts/setup.sh
scripts/build.sh "$preset"
# The openai npm client, pinned by its package-lock.json, for the server's client test.
npm ci --prefix tests/serve/openai_client --no-audit --no-fund --loglevel=error
label_args=()
if [ -n "${BITDELTA_TEST_LABEL:-}" ]; then label_args=(-L "$BITDELTA_TEST_LABEL"); fi
ctest --preset "$preset" -j "${BITDELTA_JOBS:-2}" "${label_args[@]}" "$@"
