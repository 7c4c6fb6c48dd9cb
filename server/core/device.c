/* device.c: choosing the compute device from --device (auto | cpu |
 * cuda[:N]). auto takes the first CUDA GPU when the CUDA backend is built in
 * and a GPU is usable, else the CPU, and says which in the log; an explicit
 * cuda that cannot be honoured is an error, never a silent fallback. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "kernels/backend.h"
#include "kernels/soup_backend.h"
#include "log.h"
#ifdef SOUPD_HAVE_CUDA
#include "kernels/backend_cuda.h"
#endif

static char *errs(const char *fmt, const char *a) {
  char buf[512];
  snprintf(buf, sizeof buf, fmt, a);
  return strdup(buf);
}

int app_device_open(struct app *a, char **err) {
  const char *dev = a->cfg.device;
  int want_cuda = -1; /* -1 cpu, else the GPU index */
  int n_gpu = 0;
#ifdef SOUPD_HAVE_CUDA
  n_gpu = backend_cuda_device_count();
#endif
  int kind = config_device_parse(dev, &want_cuda); /* checked when the config was loaded */
  if (kind < 0) {
    *err = errs("--device %s: expected auto, cpu or cuda[:N]", dev);
    return -1;
  }
  if (kind == 0) {
    want_cuda = n_gpu > 0 ? 0 : -1;
    if (want_cuda < 0)
#ifdef SOUPD_HAVE_CUDA
      log_info("device auto: no usable CUDA GPU found; using the CPU backend");
#else
      log_info("device auto: this build has no CUDA backend; using the CPU backend");
#endif
  } else if (kind == 2) {
#ifndef SOUPD_HAVE_CUDA
    *err = errs("--device %s: this build has no CUDA backend (rebuild with the CUDA toolkit "
                "and -DSOUPD_CUDA=ON), or use --device cpu",
                dev);
    return -1;
#endif
    if (want_cuda >= n_gpu) {
      char buf[200];
      snprintf(buf, sizeof buf, "--device %s: %d usable CUDA GPU(s) found", dev, n_gpu);
      *err = strdup(buf);
      return -1;
    }
  }
  if (want_cuda < 0) {
    a->be = backend_cpu_new((int)a->cfg.compute_threads);
    a->soup_be = soup_backend_cpu();
    snprintf(a->device, sizeof a->device, "cpu");
    if (!a->be) {
      *err = strdup("cannot create the CPU compute backend");
      return -1;
    }
    return 0;
  }
#ifdef SOUPD_HAVE_CUDA
  a->be = backend_cuda_new(want_cuda, err);
  if (!a->be) return -1;
  a->soup_be = soup_backend_cuda_for(want_cuda);
  if (!a->soup_be) {
    *err = strdup("cannot create the CUDA soup backend");
    return -1;
  }
  snprintf(a->device, sizeof a->device, "cuda:%d", want_cuda);
  log_info("device %s: using the CUDA backend", a->device);
#endif
  return 0;
}
