#!/usr/bin/env bash
# deploy/install.sh: installs what soupd needs to build, run and test on
# Debian 12, and nothing else. Idempotent: installs only what is missing.
#
#   sudo deploy/install.sh          # build and run dependencies
#   sudo deploy/install.sh --test   # plus what the test suite needs
#
# Every dependency of the project is listed here and only here.
set -euo pipefail

RUN_PKGS=(build-essential cmake pkg-config
  libmicrohttpd-dev libjansson-dev libsqlite3-dev libssl-dev libopenblas-dev libpng-dev
  curl ca-certificates)
TEST_PKGS=(libcmocka-dev libcurl4-openssl-dev clang sqlite3 python3 python3-pytest
  python3-requests python3-numpy)

want=("${RUN_PKGS[@]}")
[[ "${1:-}" == "--test" ]] && want+=("${TEST_PKGS[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
if ((${#missing[@]})); then
  echo "install.sh: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install.sh: all Debian packages present"
fi

# The python3 first on PATH runs the API tests; it needs pytest and requests.
if [[ "${1:-}" == "--test" ]]; then
  if ! python3 -c 'import pytest, requests, numpy' 2>/dev/null; then
    echo "install.sh: $(command -v python3) lacks pytest/requests/numpy; installing them with pip"
    python3 -m pip install -q pytest requests numpy
  fi
fi
