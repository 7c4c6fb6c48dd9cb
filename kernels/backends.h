/* backends.h: the backend registry. It knows which compute backends this
 * build holds and returns a compute backend together with the soup ops of
 * the same device, so nothing outside kernels/ needs to know how a backend
 * is built in (no SOUPD_HAVE_CUDA outside this folder). */
#pragma once

#include "backend.h"
#include "soup_backend.h"

/* 1 if the CUDA backend is built in. */
int backends_have_cuda(void);
/* "cpu" or "cpu cuda": the backends built in. */
const char *backends_built(void);
/* Usable CUDA GPUs (0 without the CUDA backend, a driver or a GPU). */
int backends_gpu_count(void);

/* A device's compute backend and soup ops. gpu < 0: the CPU with `threads`
 * threads (0 = every core); else CUDA GPU `gpu`. Returns 0, or -1 with
 * *err (malloc'd) saying why (no CUDA backend built in, no such GPU, ...). */
int backends_open(int gpu, int threads, struct backend **be, const struct soup_backend **soup,
                  char **err);
