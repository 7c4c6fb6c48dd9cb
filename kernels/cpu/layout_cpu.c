/* layout_cpu.c: concat_channels, upsample_nearest, permute and slice on the
 * CPU (pure data movement; no op here allows out to alias its input).
 *
 * upsample_nearest follows PyTorch's legacy 'nearest': same size -> same
 * index, exactly 2x -> dst >> 1, else src = min(floor(dst * (float)(in/out)),
 * in - 1) with the scale and product in float (upsample_nearest2d, no
 * scale_factor given). permute merges dims that stay adjacent and runs a
 * tiled transpose when the result is a (batched) 2-D transpose.
 */
#include <math.h>
#include <stdlib.h>

#include "cpu_impl.h"

struct cat_job {
  float *out;
  const float *a, *b;
  int64_t na, nb; /* elements per image of a and b */
};

static void cat_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct cat_job *j = ctx;
  for (int64_t n = i0; n < i1; n++) {
    float *o = j->out + n * (j->na + j->nb);
    memcpy(o, j->a + n * j->na, (size_t)j->na * sizeof(float));
    memcpy(o + j->na, j->b + n * j->nb, (size_t)j->nb * sizeof(float));
  }
}

int concat_channels_cpu(struct backend *be, struct tensor *out, const struct tensor *a,
                        const struct tensor *b) {
  int64_t N = a->shape[0];
  if (N == 0) return 0;
  struct cat_job j = {out->data, a->data, b->data, tensor_numel(a) / N, tensor_numel(b) / N};
  parallel_for(cpu_ctx(be)->pool, N, 1, cat_task, &j);
  return 0;
}

/* PyTorch nearest source index (legacy mode, scale from the sizes) */
static int64_t nearest_src(int64_t dst, int64_t in, int64_t out) {
  if (out == in) return dst;
  if (out == 2 * in) return dst >> 1;
  float scale = (float)in / (float)out;
  int64_t s = (int64_t)floorf((float)dst * scale);
  return s < in - 1 ? s : in - 1;
}

struct up_job {
  const float *x;
  float *out;
  int64_t H, W, Ho, Wo;
  const int64_t *sx; /* [Wo] source columns */
};

static void up_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct up_job *j = ctx;
  for (int64_t r = i0; r < i1; r++) { /* r = plane * Ho + oy */
    int64_t plane = r / j->Ho, oy = r % j->Ho;
    const float *xr = j->x + (plane * j->H + nearest_src(oy, j->H, j->Ho)) * j->W;
    float *o = j->out + r * j->Wo;
    if (j->Wo == 2 * j->W)
      for (int64_t ox = 0; ox < j->W; ox++) o[2 * ox] = o[2 * ox + 1] = xr[ox];
    else
      for (int64_t ox = 0; ox < j->Wo; ox++) o[ox] = xr[j->sx[ox]];
  }
}

int upsample_nearest_cpu(struct backend *be, struct tensor *out, const struct tensor *x) {
  if (tensor_numel(out) == 0) return 0;
  struct up_job j = {x->data,       out->data,     x->shape[2], x->shape[3],
                     out->shape[2], out->shape[3], NULL};
  int64_t *sx = malloc((size_t)j.Wo * sizeof *sx);
  if (!sx) return backend_fail(be, -ENOMEM, "upsample_nearest: no memory");
  for (int64_t i = 0; i < j.Wo; i++) sx[i] = nearest_src(i, j.W, j.Wo);
  j.sx = sx;
  int64_t rows = x->shape[0] * x->shape[1] * j.Ho;
  parallel_for(cpu_ctx(be)->pool, rows, (1 << 14) / (j.Wo + 1) + 1, up_task, &j);
  free(sx);
  return 0;
}

/* ---- permute ---- */

struct perm_job {
  const float *x;
  float *out;
  int nd;
  int64_t oshape[TENSOR_MAX_DIMS], xstride[TENSOR_MAX_DIMS]; /* x stride per out dim */
  int64_t R, C;                                              /* transpose: [R, C] -> [C, R] */
};

static void transpose_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct perm_job *j = ctx;
  const int64_t T = 32;
  int64_t tc = (j->C + T - 1) / T, tr = (j->R + T - 1) / T;
  for (int64_t t = i0; t < i1; t++) { /* t = (batch, tile row, tile col) */
    int64_t b = t / (tr * tc), rem = t % (tr * tc), r0 = rem / tc * T, c0 = rem % tc * T;
    const float *x = j->x + b * j->R * j->C;
    float *o = j->out + b * j->R * j->C;
    int64_t r1 = r0 + T < j->R ? r0 + T : j->R, c1 = c0 + T < j->C ? c0 + T : j->C;
    for (int64_t c = c0; c < c1; c++)
      for (int64_t r = r0; r < r1; r++) o[c * j->R + r] = x[r * j->C + c];
  }
}

static void perm_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct perm_job *j = ctx; /* item = one innermost row of out */
  int64_t inner = j->oshape[j->nd - 1], s_in = j->xstride[j->nd - 1];
  for (int64_t r = i0; r < i1; r++) {
    int64_t rem = r, off = 0;
    for (int d = j->nd - 2; d >= 0; d--) {
      off += (rem % j->oshape[d]) * j->xstride[d];
      rem /= j->oshape[d];
    }
    const float *x = j->x + off;
    float *o = j->out + r * inner;
    for (int64_t i = 0; i < inner; i++) o[i] = x[i * s_in];
  }
}

int permute_cpu(struct backend *be, struct tensor *out, const struct tensor *x, const int *perm) {
  int nd = x->ndim;
  int64_t n = tensor_numel(x);
  if (n == 0) return 0;
  int64_t xs[TENSOR_MAX_DIMS];
  xs[nd - 1] = 1;
  for (int d = nd - 2; d >= 0; d--) xs[d] = xs[d + 1] * x->shape[d + 1];
  /* merge out dims whose x dims are adjacent (drop size-1 dims) */
  struct perm_job j = {.x = x->data, .out = out->data};
  int m = 0;
  for (int i = 0; i < nd; i++) {
    int64_t sz = out->shape[i], st = xs[perm[i]];
    if (sz == 1) continue;
    if (m > 0 && j.xstride[m - 1] == st * sz) {
      j.oshape[m - 1] *= sz;
      j.xstride[m - 1] = st;
      continue;
    }
    j.oshape[m] = sz;
    j.xstride[m] = st;
    m++;
  }
  struct cpu_ctx *c = cpu_ctx(be);
  if (m <= 1) { /* identity in memory */
    memcpy(out->data, x->data, (size_t)n * sizeof(float));
    return 0;
  }
  j.nd = m;
  /* batched 2-D transpose: out [Bt, C, R] from x [Bt, R, C] */
  int tr2 = m == 2 && j.xstride[1] == j.oshape[0] && j.xstride[0] == 1;
  int tr3 = m == 3 && j.xstride[0] == j.oshape[1] * j.oshape[2] && j.xstride[2] == j.oshape[1] &&
            j.xstride[1] == 1;
  if (tr2 || tr3) {
    int64_t Bt = m == 3 ? j.oshape[0] : 1;
    j.C = j.oshape[m - 2];
    j.R = j.oshape[m - 1];
    int64_t tiles = Bt * ((j.R + 31) / 32) * ((j.C + 31) / 32);
    parallel_for(c->pool, tiles, 16, transpose_task, &j);
    return 0;
  }
  int64_t rows = n / j.oshape[m - 1];
  parallel_for(c->pool, rows, (1 << 14) / j.oshape[m - 1] + 1, perm_task, &j);
  return 0;
}

struct slice_job {
  const float *x;
  float *out;
  int64_t len, xlen; /* elements per outer index in out and in x */
};

static void slice_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct slice_job *j = ctx;
  for (int64_t o = i0; o < i1; o++)
    memcpy(j->out + o * j->len, j->x + o * j->xlen, (size_t)j->len * sizeof(float));
}

int slice_cpu(struct backend *be, struct tensor *out, const struct tensor *x, int dim,
              int64_t start) {
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < dim; i++) outer *= x->shape[i];
  for (int i = dim + 1; i < x->ndim; i++) inner *= x->shape[i];
  if (tensor_numel(out) == 0) return 0;
  struct slice_job j = {(const float *)x->data + start * inner, out->data, out->shape[dim] * inner,
                        x->shape[dim] * inner};
  parallel_for(cpu_ctx(be)->pool, outer, (1 << 14) / (j.len + 1) + 1, slice_task, &j);
  return 0;
}
