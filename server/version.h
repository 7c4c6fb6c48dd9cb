/* version.h: the daemon's version and the compute backends built in. */
#pragma once

#define SOUPD_VERSION "0.1.0"

/* "cpu" or "cpu cuda". */
const char *soupd_backends(void);
