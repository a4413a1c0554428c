#!/usr/bin/env bash
# Installs every Debian package BitDelta needs to build, test and run. Idempotent: packages that
# are already installed are skipped, and `apt-get update` runs only when something is missing.
# Works as root on a fresh Debian 12 machine (uses sudo when not root).
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config git
  # libraries
  nlohmann-json3-dev libfmt-dev libspdlog-dev libcli11-dev libpcre2-dev libutf8proc-dev
  libsodium-dev libssl-dev libhwy-dev
  # checksums of adapter data (XXH3); Keccak-256 for EIP-55 address checksums
  libxxhash-dev libcrypto++-dev
  # training's GEMMs (forward and backward with transposes)
  libopenblas-dev
  # serving: the adapter registry and the HTTP server (curl for the demo's requests)
  libsqlite3-dev libcpp-httplib-dev curl
  # tests, benchmarks (oneDNN only for the prefill GEMM comparison, bench/gemm_bench) and the
  # experiment script's table formatting
  libgtest-dev libgmock-dev libbenchmark-dev libdnnl-dev python3
  # the test that checks the shipped JSON Schemas against the record validators
  python3-jsonschema
)

# Node.js and npm for the official openai client test of the server (tests/serve/openai_client);
# machines that already have a Node.js (e.g. from NodeSource, which bundles npm) keep theirs.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then packages+=(nodejs npm); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then sudo="sudo"; else
    echo "setup: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
