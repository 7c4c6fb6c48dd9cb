/* hd.h: SOUPD_HD marks a static inline function that C and CUDA both
 * compile: __host__ __device__ under nvcc, nothing in plain C. */
#pragma once

#ifdef __CUDACC__
#define SOUPD_HD __host__ __device__
#else
#define SOUPD_HD
#endif
