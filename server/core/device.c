/* device.c: choosing the compute device from --device (auto | cpu |
 * cuda[:N]). auto takes the first CUDA GPU when the CUDA backend is built in
 * and a GPU is usable, else the CPU, and says which in the log; an explicit
 * cuda that cannot be honoured is an error, never a silent fallback. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "kernels/backends.h"
#include "log.h"

static char *errs(const char *fmt, const char *a) {
  char buf[512];
  snprintf(buf, sizeof buf, fmt, a);
  return strdup(buf);
}

int app_device_open(struct app *a, char **err) {
  const char *dev = a->cfg.device;
  int gpu = -1; /* -1 the CPU, else the GPU index */
  int n_gpu = backends_gpu_count();
  int kind = config_device_parse(dev, &gpu); /* checked when the config was loaded */
  if (kind < 0) {
    *err = errs("--device %s: expected auto, cpu or cuda[:N]", dev);
    return -1;
  }
  if (kind == 0) {
    gpu = n_gpu > 0 ? 0 : -1;
    if (gpu < 0)
      log_info("device auto: %s; using the CPU backend", backends_have_cuda()
                                                             ? "no usable CUDA GPU found"
                                                             : "this build has no CUDA backend");
  } else if (kind == 2 && !backends_have_cuda()) {
    *err = errs("--device %s: this build has no CUDA backend (rebuild with the CUDA toolkit "
                "and -DSOUPD_CUDA=ON), or use --device cpu",
                dev);
    return -1;
  } else if (kind == 2 && gpu >= n_gpu) {
    char buf[200];
    snprintf(buf, sizeof buf, "--device %s: %d usable CUDA GPU(s) found", dev, n_gpu);
    *err = strdup(buf);
    return -1;
  }
  if (backends_open(gpu, (int)a->cfg.compute_threads, &a->be, &a->soup_be, err) != 0) return -1;
  if (gpu < 0) {
    snprintf(a->device, sizeof a->device, "cpu");
  } else {
    snprintf(a->device, sizeof a->device, "cuda:%d", gpu);
    log_info("device %s: using the CUDA backend", a->device);
  }
  return 0;
}
