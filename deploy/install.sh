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
  curl ca-certificates openssl)
TEST_PKGS=(libcmocka-dev clang libclang-rt-14-dev sqlite3 python3 python3-pip python3-pytest
  python3-requests python3-numpy python3-pil python3-yaml)

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

# The python3 first on PATH runs the API tests. Besides pytest, requests,
# numpy and Pillow they use the real client libraries openai and webuiapi,
# which Debian does not package: those come from PyPI.
if [[ "${1:-}" == "--test" ]]; then
  if ! python3 -c 'import pytest, requests, numpy, PIL, yaml, openai, webuiapi' 2>/dev/null; then
    echo "install.sh: installing the Python test clients into $(command -v python3) with pip"
    pip_args=(-q pytest requests numpy pillow pyyaml "openai>=1.0" webuiapi)
    python3 -m pip install "${pip_args[@]}" 2>/dev/null ||
      python3 -m pip install --break-system-packages "${pip_args[@]}"
  fi
fi
