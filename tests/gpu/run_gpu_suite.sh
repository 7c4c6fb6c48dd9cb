#!/bin/bash
# run_gpu_suite.sh: the GPU test suite, for a machine with an NVIDIA GPU.
#
#   tests/gpu/run_gpu_suite.sh [BUILD_DIR]     (default: build-gpu)
#
# Builds with -DSOUPD_CUDA=ON (fails if the toolkit/cuDNN is missing), runs
# `ctest -L gpu` (a skipped test, exit 77, counts as a failure here: on a GPU
# machine nothing may skip), the op test again with SOUPD_CUDA_MATH=tf32,
# then compute-sanitizer memcheck and racecheck over every GPU test
# executable (racecheck on the smaller ones only: it is slow), and writes
# everything to tests/gpu/results/<UTC date>-<gpu name>-<commit>.log.
# Exit status: 0 only if every step passed.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-gpu}
case "$build" in /*) ;; *) build=$root/$build ;; esac
jobs=${JOBS:-$(nproc)}

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "run_gpu_suite: no NVIDIA GPU visible (nvidia-smi -L failed)" >&2
  exit 2
fi
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' /' '__')
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$root" status --porcelain 2>/dev/null | grep -q . && echo "-dirty" || true)
mkdir -p "$root/tests/gpu/results"
log=$root/tests/gpu/results/$(date -u +%Y%m%dT%H%M%SZ)-$gpu-$commit$dirty.log
status=0
step() { # name, command...
  local name=$1
  shift
  echo "=== $name: $*" | tee -a "$log"
  local t0=$SECONDS
  "$@" >>"$log" 2>&1
  local rc=$?
  echo "=== $name: rc=$rc ($((SECONDS - t0)) s)" | tee -a "$log"
  [ $rc -eq 0 ] || status=1
  return $rc
}

{
  echo "soupd GPU suite, commit $commit$dirty, $(date -u)"
  nvidia-smi
  nvcc --version 2>/dev/null | tail -2
} >"$log" 2>&1

step configure cmake -S "$root" -B "$build" -DSOUPD_CUDA=ON -DCMAKE_BUILD_TYPE=Release || {
  echo "log: $log"
  exit 1
}
step build cmake --build "$build" -j"$jobs" || {
  echo "log: $log"
  exit 1
}

# a skip (77) on a GPU machine is a failure: run the executables directly too
step ctest-gpu ctest --test-dir "$build" -L gpu --output-on-failure --timeout 1800
tests=$(cd "$build" && ls test_*cuda* 2>/dev/null)
for t in $tests; do
  step "run $t" "$build/$t"
done
step "run test_kernels_cuda_ops (tf32)" env SOUPD_CUDA_MATH=tf32 "$build/test_kernels_cuda_ops"
step "run test_diffusion_cuda_models (tf32)" env SOUPD_CUDA_MATH=tf32 \
  "$build/test_diffusion_cuda_models"

if command -v compute-sanitizer >/dev/null; then
  cs=compute-sanitizer
elif [ -x /usr/local/cuda/bin/compute-sanitizer ]; then
  cs=/usr/local/cuda/bin/compute-sanitizer
else
  cs=
  echo "=== compute-sanitizer not found: memcheck/racecheck NOT run" | tee -a "$log"
  status=1
fi
if [ -n "$cs" ]; then
  for t in $tests; do
    step "memcheck $t" "$cs" --tool memcheck --error-exitcode 99 --leak-check full "$build/$t"
  done
  for t in test_kernels_cuda_ops test_soup_cuda; do
    [ -x "$build/$t" ] && step "racecheck $t" "$cs" --tool racecheck --error-exitcode 99 "$build/$t"
    [ -x "$build/$t" ] && step "synccheck $t" "$cs" --tool synccheck --error-exitcode 99 "$build/$t"
  done
fi

echo "=== suite $([ $status -eq 0 ] && echo PASSED || echo FAILED)" | tee -a "$log"
echo "log: $log"
exit $status
