/* check_cuda.cu: the CUDA backend's copy of kernels/check.c (the operand
 * checks both backends share). soupd_cuda is linked after soupd_kernels and
 * may not call into it (see cuda_impl.cuh), so the same source is built here
 * under the cu_ names kernels/check.h gives it in .cu files, with the dtype
 * names taken from cuda_impl.cuh instead of kernels/tensor.c.
 */
#include "cuda_impl.cuh"

#define dtype_name cu_dtype_name
#include "kernels/check.c"
