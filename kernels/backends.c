/* backends.c: the backend registry (backends.h). */
#include "backends.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef SOUPD_HAVE_CUDA
#include "backend_cuda.h"
#endif

int backends_have_cuda(void) {
#ifdef SOUPD_HAVE_CUDA
  return 1;
#else
  return 0;
#endif
}

const char *backends_built(void) {
  return backends_have_cuda() ? "cpu cuda" : "cpu";
}

int backends_gpu_count(void) {
#ifdef SOUPD_HAVE_CUDA
  return backend_cuda_device_count();
#else
  return 0;
#endif
}

int backends_open(int gpu, int threads, struct backend **be, const struct soup_backend **soup,
                  char **err) {
  *be = NULL, *soup = NULL;
  if (gpu < 0) {
    *be = backend_cpu_new(threads);
    *soup = soup_backend_cpu();
    if (*be) return 0;
    *err = strdup("cannot create the CPU compute backend");
    return -1;
  }
#ifdef SOUPD_HAVE_CUDA
  *be = backend_cuda_new(gpu, err);
  if (!*be) return -1;
  *soup = soup_backend_cuda_for(gpu);
  if (*soup) return 0;
  be_destroy(*be);
  *be = NULL;
  *err = strdup("cannot create the CUDA soup backend");
  return -1;
#else
  *err = strdup("this build has no CUDA backend");
  return -1;
#endif
}
