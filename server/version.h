/* version.h: the daemon's version (the backends built in: kernels/backends.h). */
#pragma once

#define SOUPD_VERSION "0.1.0"
