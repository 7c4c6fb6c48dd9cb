#!/usr/bin/env bash
# deploy/build.sh [BUILD_DIR] [cmake args...]: configures and builds soupd
# (Release, CUDA backend when the toolkit is present).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
