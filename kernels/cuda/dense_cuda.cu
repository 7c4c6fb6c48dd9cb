/* dense_cuda.cu: conv2d, linear and batched matmul on the GPU.
 *
 * linear/matmul: cuBLAS GEMM, F32 in/out, F32 compute without tensor cores
 * by default (SOUPD_CUDA_MATH=tf32 allows TF32; =f16 runs linear with an F16
 * weight as an F16 x F16 GEMM with F32 accumulation). F16/BF16 weights are
 * widened into a scratch slot per call (never cached by pointer: the soup
 * rewrites weights in place). conv2d: cuDNN cudnnConvolutionForward (NCHW,
 * F32, FMA math unless tf32/f16 is chosen), the algorithm chosen once per
 * shape by cudnnGetConvolutionForwardAlgorithm_v7 and cached with its
 * workspace size; when cuDNN refuses a shape (or offers no FMA algorithm in
 * exact mode), im2col + GEMM per image and tile of output rows, the im2col
 * scratch bounded by 64 MiB. SOUPD_CUDA_CONV=im2col forces that path;
 * =im2col-rows also makes every tile one output row (for the tests).
 * Shapes and errors are checked exactly as the CPU backend does.
 */
#include <stdio.h>

#include "cuda_impl.cuh"

/* col [Ci*kh*kw, rows*Wo] for output rows [oy0, oy0+rows) of one image
 * x [Ci, H, W] */
__global__ void im2col_kernel(float *col, const float *x, int64_t Ci, int64_t H, int64_t W,
                              int64_t kh, int64_t kw, int64_t oy0, int64_t rows, int64_t Wo,
                              int stride, int pad) {
  int64_t P = rows * Wo;
  CU_FOR(i, Ci * kh * kw * P) {
    int64_t p = i % P, r = i / P;
    int64_t kx = r % kw, ky = (r / kw) % kh, ci = r / (kw * kh);
    int64_t oy = oy0 + p / Wo, ox = p % Wo;
    int64_t iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
    col[i] = iy >= 0 && iy < H && ix >= 0 && ix < W ? x[(ci * H + iy) * W + ix] : 0.0f;
  }
}

__global__ void bias_nchw_kernel(float *out, const float *b, int64_t C, int64_t S, int64_t n) {
  CU_FOR(i, n) out[i] += b[(i / S) % C];
}

__global__ void to_half_kernel(__half *dst, const float *src, int64_t n) {
  CU_FOR(i, n) dst[i] = __float2half_rn(src[i]);
}

static int conv_algo(struct backend *be, const int64_t key[9], int *algo, size_t *ws) {
  struct cuda_ctx *c = cuda_ctx(be);
  for (int i = 0; i < c->conv_n; i++)
    if (memcmp(c->conv[i].key, key, sizeof c->conv[i].key) == 0) {
      *algo = c->conv[i].algo;
      *ws = c->conv[i].ws;
      return 0;
    }
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int got = 0;
  *algo = -1;
  *ws = 0;
  cudnnStatus_t s = cudnnGetConvolutionForwardAlgorithm_v7(
      c->dnn, c->xd, c->wd, c->cd, c->yd, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf);
  if (s == CUDNN_STATUS_SUCCESS) {
    for (int i = 0; i < got; i++) {
      if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
      /* exact mode: FMA math only (DEFAULT allows TF32 on Ampere and
       * later); 1 GiB workspace at most */
      if (c->math == CUDA_MATH_F32 && perf[i].mathType != CUDNN_FMA_MATH) continue;
      if (perf[i].memory > ((size_t)1 << 30)) continue;
      *algo = (int)perf[i].algo;
      *ws = perf[i].memory;
      break;
    }
  }
  int slot = c->conv_n < CONV_CACHE ? c->conv_n++ : (int)(key[0] % CONV_CACHE);
  memcpy(c->conv[slot].key, key, sizeof c->conv[slot].key);
  c->conv[slot].algo = *algo;
  c->conv[slot].ws = *ws;
  return 0;
}

int conv2d_cuda(struct backend *be, struct tensor *out, const struct tensor *x,
                const struct tensor *w, const struct tensor *b, int stride, int pad) {
  static const char *op = "conv2d";
  int rc;
  int64_t N = x->shape[0], Ci = x->shape[1], H = x->shape[2], W = x->shape[3];
  int64_t Co = w->shape[0], kh = w->shape[2], kw = w->shape[3];
  int64_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
  if (N == 0 || Co == 0) return 0;
  struct cuda_ctx *c = cuda_ctx(be);
  const float *wf = cuda_param_f32(be, w, CS_WEIGHT, op);
  if (!wf) return -ENOMEM;
  const float *bf = NULL;
  if (b && !(bf = cuda_param_f32(be, b, CS_BIAS, op))) return -ENOMEM;
  float *y = (float *)out->data;
  const float *xd = (const float *)x->data;
  int64_t K = Ci * kh * kw, P = Ho * Wo;
  int algo = -1;
  size_t ws = 0;
  int fits = N <= INT32_MAX && Ci <= INT32_MAX && H <= INT32_MAX && W <= INT32_MAX &&
             Co <= INT32_MAX && N * Ci * H * W <= INT32_MAX && N * Co * P <= INT32_MAX;
  if (fits && K > 0 && !c->conv_im2col) {
    CUDNN_TRY(be, cudnnSetTensor4dDescriptor(c->xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)N,
                                             (int)Ci, (int)H, (int)W));
    CUDNN_TRY(be, cudnnSetTensor4dDescriptor(c->yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)N,
                                             (int)Co, (int)Ho, (int)Wo));
    CUDNN_TRY(be, cudnnSetFilter4dDescriptor(c->wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, (int)Co,
                                             (int)Ci, (int)kh, (int)kw));
    CUDNN_TRY(be, cudnnSetConvolution2dDescriptor(c->cd, pad, pad, stride, stride, 1, 1,
                                                  CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_TRY(be, cudnnSetConvolutionMathType(c->cd, c->math == CUDA_MATH_F32
                                                         ? CUDNN_FMA_MATH
                                                         : CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION));
    int64_t key[9] = {N, Ci, H, W, Co, kh * 65536 + kw, stride, pad, c->math};
    conv_algo(be, key, &algo, &ws);
  }
  int done = 0;
  if (algo >= 0) {
    void *wsp = ws ? cuda_scratch(be, CS_WORK, ws) : NULL;
    if (ws && !wsp) return -ENOMEM;
    float one = 1.0f, zero = 0.0f;
    cudnnStatus_t s =
        cudnnConvolutionForward(c->dnn, &one, c->xd, xd, c->wd, wf, c->cd,
                                (cudnnConvolutionFwdAlgo_t)algo, wsp, ws, &zero, c->yd, y);
    done = s == CUDNN_STATUS_SUCCESS;
  }
  if (!done) { /* im2col + GEMM per image and tile of output rows (bounded scratch) */
    int direct = kh == 1 && kw == 1 && stride == 1 && pad == 0;
    int64_t rows = Ho;
    if (!direct && K > 0) {
      rows = c->conv_col_floats / (K * Wo);
      rows = rows < 1 ? 1 : rows > Ho ? Ho : rows;
    }
    float *col = NULL;
    if (!direct && K > 0 && !(col = (float *)cuda_scratch(be, CS_COL, (size_t)(K * rows * Wo) * 4)))
      return -ENOMEM;
    for (int64_t n = 0; n < N; n++) {
      const float *xn = xd + n * Ci * H * W;
      float *yn = y + n * Co * P;
      if (K == 0) {
        CU_TRY(be, cudaMemsetAsync(yn, 0, (size_t)(Co * P) * 4, c->stream));
        continue;
      }
      if (direct) { /* out[Co, P] = w[Co, Ci] @ x[Ci, P] */
        if ((rc = cuda_sgemm(be, 0, 0, Co, P, K, 1.0f, wf, K, 0, xn, P, 0, 0.0f, yn, P, 0, 1)))
          return rc;
        continue;
      }
      for (int64_t oy0 = 0; oy0 < Ho; oy0 += rows) {
        int64_t r = Ho - oy0 < rows ? Ho - oy0 : rows, Pt = r * Wo;
        im2col_kernel<<<cu_blocks(K * Pt, 256), 256, 0, c->stream>>>(col, xn, Ci, H, W, kh, kw, oy0,
                                                                     r, Wo, stride, pad);
        CU_LAUNCHED(be);
        /* out[Co, tile] (ld P) = w[Co, K] @ col[K, Pt] */
        if ((rc = cuda_sgemm(be, 0, 0, Co, Pt, K, 1.0f, wf, K, 0, col, Pt, 0, 0.0f, yn + oy0 * Wo,
                             P, 0, 1)))
          return rc;
      }
    }
  }
  if (bf) {
    int64_t n = N * Co * P;
    bias_nchw_kernel<<<cu_blocks(n, 256), 256, 0, c->stream>>>(y, bf, Co, P, n);
    CU_LAUNCHED(be);
  }
  return 0;
}

int linear_cuda(struct backend *be, struct tensor *out, const struct tensor *x,
                const struct tensor *w, const struct tensor *b) {
  static const char *op = "linear";
  int rc;
  int64_t O = w->shape[0], In = w->shape[1];
  int64_t M = In ? tensor_numel(x) / In : tensor_numel(out) / (O ? O : 1);
  if (M == 0 || O == 0) return 0;
  struct cuda_ctx *c = cuda_ctx(be);
  const float *bf = NULL;
  if (b && !(bf = cuda_param_f32(be, b, CS_BIAS, op))) return -ENOMEM;
  if (In == 0) {
    CU_TRY(be, cudaMemsetAsync(out->data, 0, (size_t)(M * O) * 4, c->stream));
  } else if (c->math == CUDA_MATH_F16 && w->dtype == DT_F16 && M <= INT32_MAX && O <= INT32_MAX &&
             In <= INT32_MAX) {
    __half *xh = (__half *)cuda_scratch(be, CS_HALF, (size_t)(M * In) * 2);
    if (!xh) return -ENOMEM;
    to_half_kernel<<<cu_blocks(M * In, 256), 256, 0, c->stream>>>(xh, (const float *)x->data,
                                                                  M * In);
    CU_LAUNCHED(be);
    float one = 1.0f, zero = 0.0f;
    CUBLAS_TRY(be,
               cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)O, (int)M, (int)In, &one,
                            w->data, CUDA_R_16F, (int)In, xh, CUDA_R_16F, (int)In, &zero, out->data,
                            CUDA_R_32F, (int)O, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  } else {
    const float *wf = cuda_param_f32(be, w, CS_WEIGHT, op);
    if (!wf) return -ENOMEM;
    if ((rc = cuda_sgemm(be, 0, 1, M, O, In, 1.0f, (const float *)x->data, In, 0, wf, In, 0, 0.0f,
                         (float *)out->data, O, 0, 1)))
      return rc;
  }
  if (bf) return cuda_add_bias_rows(be, (float *)out->data, bf, M, O);
  return 0;
}

int matmul_cuda(struct backend *be, struct tensor *out, const struct tensor *a, int trans_a,
                const struct tensor *b, int trans_b, float alpha) {
  int d = a->ndim - 2;
  int64_t B = d ? a->shape[0] : 1;
  int64_t M = trans_a ? a->shape[d + 1] : a->shape[d], K = trans_a ? a->shape[d] : a->shape[d + 1];
  int64_t N = trans_b ? b->shape[d] : b->shape[d + 1];
  if (B == 0 || M == 0 || N == 0) return 0;
  if (K == 0) {
    CU_TRY(be, cudaMemsetAsync(out->data, 0, (size_t)(B * M * N) * 4, cuda_ctx(be)->stream));
    return 0;
  }
  return cuda_sgemm(be, trans_a != 0, trans_b != 0, M, N, K, alpha, (const float *)a->data,
                    trans_a ? M : K, M * K, (const float *)b->data, trans_b ? K : N, K * N, 0.0f,
                    (float *)out->data, N, M * N, B);
}
