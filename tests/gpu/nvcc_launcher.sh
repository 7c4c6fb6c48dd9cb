#!/bin/sh
# nvcc_launcher.sh: CMAKE_CUDA_COMPILER_LAUNCHER that drops the GCC-only
# warning flags the top-level add_compile_options() also hands to nvcc
# (nvcc rejects "-Werror -Wno-unused-parameter"), passing them to the host
# compiler instead. Needed only until CMakeLists.txt scopes those options to
# $<COMPILE_LANGUAGE:C>. Usage:
#   cmake -S . -B build-cuda -DCMAKE_CUDA_COMPILER_LAUNCHER=$PWD/tests/gpu/nvcc_launcher.sh
cmd=$1
shift
for a in "$@"; do
  shift
  case "$a" in
  -Wall | -Wextra | -Wno-unused-parameter | -Wno-format-truncation)
    set -- "$@" "-Xcompiler=$a" ;;
  -Werror) ;; # nvcc's own -Werror=all-warnings is set per target
  -ffp-contract=off | -fsanitize=* | -fno-omit-frame-pointer | -fno-sanitize-recover=* | -march=*)
    set -- "$@" "-Xcompiler=$a" ;;
  *) set -- "$@" "$a" ;;
  esac
done
exec "$cmd" "$@"
