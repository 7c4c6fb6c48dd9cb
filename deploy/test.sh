#!/usr/bin/env bash
# deploy/test.sh: the README's second quick-start command. Installs what is
# missing, builds, and runs the whole test suite with ctest (labels unit,
# golden, api, fuzz; gpu skips itself without a GPU).
#   deploy/test.sh              Release build in build/
#   deploy/test.sh --sanitize   ASan+UBSan build in build-asan/: the C tests, and the API
#                               tests against the instrumented daemon
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install.sh --test
if [[ "${1:-}" == "--sanitize" ]]; then
  bash deploy/build.sh build-asan -DSOUPD_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
  ctest --test-dir build-asan --output-on-failure -j2 -L 'unit|golden|api' --timeout 1800
else
  bash deploy/build.sh build
  ctest --test-dir build --output-on-failure -j2 --timeout 1800
fi
