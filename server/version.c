/* version.c: backends compiled in (SOUPD_HAVE_CUDA comes from the build). */
#include "version.h"

const char *soupd_backends(void) {
#ifdef SOUPD_HAVE_CUDA
  return "cpu cuda";
#else
  return "cpu";
#endif
}
