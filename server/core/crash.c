/* crash.c: see crash.h. */
#include "crash.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

void crash_point(const char *name) {
  const char *at = getenv("SOUPD_CRASH_AT");
  if (at && strcmp(at, name) == 0) {
    log_warn("SOUPD_CRASH_AT=%s: killing the process here", name);
    raise(SIGKILL);
  }
}
