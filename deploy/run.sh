#!/usr/bin/env bash
# deploy/run.sh: the README's first quick-start command. Installs what is
# missing, builds, and starts soupd in the foreground on the embedded default
# model (http://127.0.0.1:8600, data in ./var). Extra arguments go to soupd.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install.sh
bash deploy/build.sh build
exec build/soupd --data-dir "${SOUPD_DATA_DIR:-./var}" "$@"
