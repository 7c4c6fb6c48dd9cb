# run_fuzz.cmake: runs one libFuzzer binary for SECONDS over WORK/corpus,
# a working copy of the committed seeds SEEDS (kept between runs so the
# corpus grows in the build dir only). Crash inputs land in WORK/ as
# crash-*, leak-*, timeout-*; any finding makes this script, so the ctest, fail.
# cmake -DFUZZER=... -DSEEDS=... -DDICT=... -DWORK=... -DSECONDS=30 -P run_fuzz.cmake
foreach(v FUZZER SEEDS WORK SECONDS)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "run_fuzz.cmake: -D${v}=... is required")
  endif()
endforeach()
if(NOT EXISTS ${FUZZER})
  message(FATAL_ERROR "fuzzer binary ${FUZZER} is missing: build the project first")
endif()
file(MAKE_DIRECTORY ${WORK}/corpus)
file(GLOB seeds ${SEEDS}/*)
file(COPY ${seeds} DESTINATION ${WORK}/corpus)
set(args -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048 -max_len=8192
         -print_final_stats=1 -artifact_prefix=${WORK}/)
if(DEFINED DICT AND EXISTS ${DICT})
  list(APPEND args -dict=${DICT})
endif()
execute_process(COMMAND ${FUZZER} ${args} ${WORK}/corpus RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${FUZZER} failed (exit ${rc}); the reproducer is in ${WORK}/")
endif()
