/* backend_cuda.h: the CUDA compute backend and the CUDA soup ops.
 *
 * Available when the build found the CUDA toolkit and cuDNN (the compile
 * definition SOUPD_HAVE_CUDA is then 1 for everything that links
 * soupd_kernels). Without a driver or a GPU at run time,
 * backend_cuda_device_count() returns 0 and the constructors fail cleanly:
 * nothing here ever aborts the process.
 *
 * The backend follows kernels/backend.h exactly (the CPU backend is the
 * reference). Tensors it allocates live in device memory; upload/download
 * move data between host and device. Ops are queued on one CUDA stream and
 * are asynchronous: synchronize or download_f32 waits for them. Math:
 * F32 GEMMs/convolutions without tensor cores by default; setting the
 * environment variable SOUPD_CUDA_MATH=tf32 (TF32 tensor cores) or
 * SOUPD_CUDA_MATH=f16 (F16 tensor cores where the weight is F16, TF32
 * elsewhere) before backend_cuda_new trades accuracy for speed.
 * SOUPD_CUDA_ATTN=fused selects the fused attention kernel (opt-in, head
 * dims <= 160); SOUPD_CUDA_CONV=im2col bypasses cuDNN for conv2d.
 */
#pragma once

#include "backend.h"
#include "soup_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 when there is no driver or no GPU. */
int backend_cuda_device_count(void);

/* A backend on device `device`. NULL on failure with *err (malloc'd, caller
 * frees) when err != NULL. */
struct backend *backend_cuda_new(int device, char **err);

/* The soup ops on the GPU (same bits as soup_backend_cpu()) on device
 * `device`: alloc returns memory on that device (use the same device as the
 * compute backend that reads the inference copy); sources stay host memory.
 * One device per process: the first successful call binds it; NULL for
 * another device, or when there is no usable device. */
const struct soup_backend *soup_backend_cuda_for(int device);
/* soup_backend_cuda_for($SOUPD_CUDA_DEVICE, default 0). */
const struct soup_backend *soup_backend_cuda(void);

#ifdef __cplusplus
}
#endif
