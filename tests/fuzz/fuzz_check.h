/* fuzz_check.h: CHECK(c) aborts with the failed invariant, which libFuzzer
 * reports as a crash with its reproducer. */
#pragma once

#include <stdio.h>
#include <stdlib.h>

#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c)) {                                                                                    \
      fprintf(stderr, "invariant failed: %s (line %d)\n", #c, __LINE__);                           \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)
