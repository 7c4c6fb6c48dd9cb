/* conv_cpu.c: conv2d on the CPU.
 *
 * out [N, Co, Ho, Wo] = w [Co, Ci, kh, kw] * x [N, Ci, H, W] + b [Co],
 * Ho = (H + 2*pad - kh)/stride + 1 (zero padding, symmetric).
 * With AVX-512: tasks of (image, tile of output rows) run conv_avx512_tile
 * (im2col packed in 32-pixel panels, weights read in place by the 8x32
 * micro-kernel).
 * Otherwise: 1x1 stride-1 convs are one sgemm per (image, column block);
 * other convs im2col a tile of output rows [K, P] into the worker's scratch
 * and run one single-threaded sgemm per tile. SOUPD_CPU_NO_AVX512=1 forces
 * the sgemm paths.
 */
#include <cblas.h>
#include <stdlib.h>

#include "cpu_impl.h"

struct conv_job {
  struct conv_geom g;
  const float *x, *w, *b;
  float *out;
  int64_t N;
  int64_t rows;  /* output rows per tile */
  int64_t tiles; /* tiles per image */
  int64_t cols;  /* 1x1 sgemm path: pixels per task */
  struct cpu_buf *tbuf;
  int failed;
};

static void add_bias(float *out, const float *b, int64_t Co, int64_t P, int64_t ld) {
  for (int64_t co = 0; co < Co; co++) {
    float bv = b[co];
    float *o = out + co * ld;
    for (int64_t p = 0; p < P; p++) o[p] += bv;
  }
}

void conv_im2col_row(const struct conv_geom *g, const float *xn, int64_t k, int64_t oy0,
                     int64_t oy1, float *row) {
  int64_t Wo = g->Wo, s = g->stride, pad = g->pad;
  int64_t kx = k % g->kw, ky = k / g->kw % g->kh, ci = k / (g->kw * g->kh);
  const float *xc = xn + ci * g->H * g->W;
  /* valid ox range: 0 <= ox*s - pad + kx < W */
  int64_t ox0 = pad - kx > 0 ? (pad - kx + s - 1) / s : 0;
  int64_t ox1 = (g->W - 1 + pad - kx) >= 0 ? (g->W - 1 + pad - kx) / s + 1 : 0;
  if (ox1 > Wo) ox1 = Wo;
  if (ox0 > ox1) ox0 = ox1;
  for (int64_t oy = oy0; oy < oy1; oy++) {
    float *r = row + (oy - oy0) * Wo;
    int64_t iy = oy * s - pad + ky;
    if (iy < 0 || iy >= g->H) {
      memset(r, 0, (size_t)Wo * sizeof(float));
      continue;
    }
    const float *xr = xc + iy * g->W - pad + kx;
    for (int64_t ox = 0; ox < ox0; ox++) r[ox] = 0.0f;
    if (s == 1)
      memcpy(r + ox0, xr + ox0, (size_t)(ox1 - ox0) * sizeof(float));
    else
      for (int64_t ox = ox0; ox < ox1; ox++) r[ox] = xr[ox * s];
    for (int64_t ox = ox1; ox < Wo; ox++) r[ox] = 0.0f;
  }
}

static void tile_range(const struct conv_job *j, int64_t t, int64_t *n, int64_t *oy0,
                       int64_t *oy1) {
  *n = t / j->tiles;
  *oy0 = t % j->tiles * j->rows;
  *oy1 = *oy0 + j->rows < j->g.Ho ? *oy0 + j->rows : j->g.Ho;
}

static void conv_avx512_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct conv_job *j = ctx;
  const struct conv_geom *g = &j->g;
  for (int64_t t = i0; t < i1; t++) {
    int64_t n, oy0, oy1;
    tile_range(j, t, &n, &oy0, &oy1);
    float *s = cpu_buf_get(&j->tbuf[tid], conv_avx512_scratch_floats((oy1 - oy0) * g->Wo));
    if (!s) {
      j->failed = 1;
      return;
    }
    conv_avx512_tile(g, j->x + n * g->Ci * g->H * g->W, j->w, j->b,
                     j->out + n * g->Co * g->Ho * g->Wo, oy0, oy1, s);
  }
}

static void conv_tile_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct conv_job *j = ctx;
  const struct conv_geom *g = &j->g;
  int64_t HWo = g->Ho * g->Wo;
  for (int64_t t = i0; t < i1; t++) {
    int64_t n, oy0, oy1;
    tile_range(j, t, &n, &oy0, &oy1);
    int64_t P = (oy1 - oy0) * g->Wo;
    float *col = cpu_buf_get(&j->tbuf[tid], (size_t)(g->K * P));
    if (!col) {
      j->failed = 1;
      return;
    }
    const float *xn = j->x + n * g->Ci * g->H * g->W;
    for (int64_t k = 0; k < g->K; k++) conv_im2col_row(g, xn, k, oy0, oy1, col + k * P);
    float *o = j->out + n * g->Co * HWo + oy0 * g->Wo;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)g->Co, (int)P, (int)g->K, 1.0f,
                j->w, (int)g->K, col, (int)P, 0.0f, o, (int)HWo);
    if (j->b) add_bias(o, j->b, g->Co, P, HWo);
  }
}

static void conv_1x1_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct conv_job *j = ctx;
  const struct conv_geom *g = &j->g;
  int64_t HW = g->H * g->W;
  int64_t per = (HW + j->cols - 1) / j->cols;
  for (int64_t t = i0; t < i1; t++) {
    int64_t n = t / per, c0 = (t % per) * j->cols;
    int64_t P = c0 + j->cols < HW ? j->cols : HW - c0;
    float *o = j->out + n * g->Co * HW + c0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)g->Co, (int)P, (int)g->Ci, 1.0f,
                j->w, (int)g->Ci, j->x + n * g->Ci * HW + c0, (int)HW, 0.0f, o, (int)HW);
    if (j->b) add_bias(o, j->b, g->Co, P, HW);
  }
}

/* rows per tile for about `target` pixels, keeping 2 tasks per thread */
static int64_t tile_rows(const struct conv_geom *g, int64_t N, int64_t target, int threads) {
  int64_t rows = target / g->Wo;
  if (rows < 1) rows = 1;
  if (rows > g->Ho) rows = g->Ho;
  while (rows > 1 && N * ((g->Ho + rows - 1) / rows) < 2 * threads) rows = (rows + 1) / 2;
  return rows;
}

int conv2d_cpu(struct backend *be, struct tensor *out, const struct tensor *x,
               const struct tensor *w, const struct tensor *b, int stride, int pad) {
  static const char *op = "conv2d";
  int64_t N = x->shape[0], Ci = x->shape[1], H = x->shape[2], W = x->shape[3];
  int64_t Co = w->shape[0], kh = w->shape[2], kw = w->shape[3];
  int64_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
  if (N == 0 || Co == 0) return 0;
  struct cpu_ctx *c = cpu_ctx(be);
  const float *bf = NULL;
  if (b && !(bf = cpu_param_f32(be, b, CPU_W_BIAS, op))) return -ENOMEM;
  struct conv_job j = {.g = {.Ci = Ci,
                             .H = H,
                             .W = W,
                             .Co = Co,
                             .kh = kh,
                             .kw = kw,
                             .Ho = Ho,
                             .Wo = Wo,
                             .K = Ci * kh * kw,
                             .stride = stride,
                             .pad = pad},
                       .x = x->data,
                       .w = NULL,
                       .b = bf,
                       .out = out->data,
                       .N = N,
                       .tbuf = c->tbuf};
  if (c->avx512 && j.g.K > 0) {
    /* the micro-kernel reads weight rows in place (F16/BF16 widened first) */
    if (!(j.w = cpu_param_f32(be, w, CPU_W_WEIGHT, op))) return -ENOMEM;
    j.rows = tile_rows(&j.g, N, 256, c->threads);
    j.tiles = (Ho + j.rows - 1) / j.rows;
    parallel_for(c->pool, N * j.tiles, 1, conv_avx512_task, &j);
  } else if (!(j.w = cpu_param_f32(be, w, CPU_W_WEIGHT, op))) {
    return -ENOMEM;
  } else if (kh == 1 && kw == 1 && stride == 1 && pad == 0) {
    /* pixels per task: enough tasks for the pool, wide enough for GEMM */
    int64_t HW = H * W, target = (N * HW + 4 * c->threads - 1) / (4 * c->threads);
    if (target < 256) target = 256;
    j.cols = target < HW ? (target + 15) / 16 * 16 : HW;
    int64_t per = (HW + j.cols - 1) / j.cols;
    parallel_for(c->pool, N * per, 1, conv_1x1_task, &j);
  } else {
    /* rows per tile: about 128K floats of im2col, at least 256 pixels */
    int64_t target_p = (1 << 17) / (j.g.K ? j.g.K : 1);
    j.rows = tile_rows(&j.g, N, target_p < 256 ? 256 : target_p, c->threads);
    j.tiles = (Ho + j.rows - 1) / j.rows;
    parallel_for(c->pool, N * j.tiles, 1, conv_tile_task, &j);
  }
  if (j.failed) return backend_fail(be, -ENOMEM, "conv2d: no memory for im2col");
  return 0;
}
