/* norm_cpu.c: group_norm, layer_norm and softmax on the CPU.
 *
 * Statistics are two-pass (mean, then the mean of squared deviations) with
 * double accumulators, biased variance (as PyTorch); then
 * y = (x - mean) * (gamma*rstd) + beta evaluated in double and rounded once
 * (SiLU after, in float). gamma/beta may be NULL (1 and 0).
 * out may alias x for all three ops (each task reads its block before
 * writing it).
 */
#include <math.h>

#include "cpu_impl.h"
#include "vecmath.h"

/* mean and biased variance of x[n], two passes with double accumulators */
CPU_CLONES static void moments(const float *x, int64_t n, double *mean, double *var) {
  vd8 a0 = {0}, a1 = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    vf8 u, w;
    memcpy(&u, x + i, sizeof u), memcpy(&w, x + i + 8, sizeof w);
    a0 += __builtin_convertvector(u, vd8);
    a1 += __builtin_convertvector(w, vd8);
  }
  double s = 0;
  for (; i < n; i++) s += x[i];
  a0 += a1;
  for (int k = 0; k < 8; k++) s += a0[k];
  double m = n ? s / (double)n : 0.0;
  vd8 q0 = {0}, q1 = {0};
  i = 0;
  for (; i + 16 <= n; i += 16) {
    vf8 u, w;
    memcpy(&u, x + i, sizeof u), memcpy(&w, x + i + 8, sizeof w);
    vd8 d0 = __builtin_convertvector(u, vd8) - m, d1 = __builtin_convertvector(w, vd8) - m;
    q0 += d0 * d0;
    q1 += d1 * d1;
  }
  double v = 0;
  for (; i < n; i++) v += (x[i] - m) * (x[i] - m);
  q0 += q1;
  for (int k = 0; k < 8; k++) v += q0[k];
  *mean = m;
  *var = n ? v / (double)n : 0.0;
}

/* y = (x - mean) * a + c in double, rounded once to float */
CPU_CLONES static void scale_shift(float *y, const float *x, int64_t n, double mean, double a,
                                   double c, int silu) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    vf8 u;
    memcpy(&u, x + i, sizeof u);
    vd8 d = (__builtin_convertvector(u, vd8) - mean) * a + c;
    u = __builtin_convertvector(d, vf8);
    memcpy(y + i, &u, sizeof u);
  }
  for (; i < n; i++) y[i] = (float)(((double)x[i] - mean) * a + c);
  if (!silu) return;
  for (i = 0; i + VF_N <= n; i += VF_N) VF_STORE(y + i, VF_XSIGMOID(VF_LOAD(y + i), 1.0f));
  if (i < n) VF_STORE_PART(y + i, VF_XSIGMOID(VF_LOAD_PART(y + i, n - i), 1.0f), n - i);
}

struct gn_job {
  const float *x, *gamma, *beta;
  float *out;
  int64_t C, S, groups;
  float eps;
  int silu;
};

static void gn_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct gn_job *j = ctx;
  int64_t cpg = j->C / j->groups;
  for (int64_t t = i0; t < i1; t++) {
    int64_t g = t % j->groups;
    const float *x = j->x + t * cpg * j->S;
    float *y = j->out + t * cpg * j->S;
    double mean, var;
    moments(x, cpg * j->S, &mean, &var);
    double rstd = 1.0 / sqrt(var + (double)j->eps);
    for (int64_t k = 0; k < cpg; k++) {
      int64_t ch = g * cpg + k;
      double a = (j->gamma ? j->gamma[ch] : 1.0) * rstd;
      double c = j->beta ? j->beta[ch] : 0.0;
      scale_shift(y + k * j->S, x + k * j->S, j->S, mean, a, c, j->silu);
    }
  }
}

int group_norm_cpu(struct backend *be, struct tensor *out, const struct tensor *x,
                   const struct tensor *gamma, const struct tensor *beta, int groups, float eps,
                   int fuse_silu) {
  static const char *op = "group_norm";
  int64_t N = x->shape[0], C = x->shape[1];
  if (N == 0 || C == 0) return 0;
  struct gn_job j = {.x = x->data,
                     .out = out->data,
                     .C = C,
                     .S = tensor_numel(x) / (N * C),
                     .groups = groups,
                     .eps = eps,
                     .silu = fuse_silu != 0};
  if (gamma && !(j.gamma = cpu_param_f32(be, gamma, CPU_W_GAMMA, op))) return -ENOMEM;
  if (beta && !(j.beta = cpu_param_f32(be, beta, CPU_W_BETA, op))) return -ENOMEM;
  parallel_for(cpu_ctx(be)->pool, N * groups, 1, gn_task, &j);
  return 0;
}

CPU_CLONES static void ln_row(float *y, const float *x, int64_t C, const float *g, const float *b,
                              float eps) {
  double mean, var;
  moments(x, C, &mean, &var);
  double rstd = 1.0 / sqrt(var + (double)eps);
  int64_t i = 0;
  if (g && b)
    for (; i + 8 <= C; i += 8) {
      vf8 u, gv, bv;
      memcpy(&u, x + i, sizeof u), memcpy(&gv, g + i, sizeof gv), memcpy(&bv, b + i, sizeof bv);
      vd8 d = (__builtin_convertvector(u, vd8) - mean) * rstd;
      d = d * __builtin_convertvector(gv, vd8) + __builtin_convertvector(bv, vd8);
      u = __builtin_convertvector(d, vf8);
      memcpy(y + i, &u, sizeof u);
    }
  for (; i < C; i++) {
    double v = ((double)x[i] - mean) * rstd;
    y[i] = (float)(v * (g ? g[i] : 1.0f) + (b ? b[i] : 0.0f));
  }
}

struct ln_job {
  const float *x, *gamma, *beta;
  float *out;
  int64_t C;
  float eps;
};

static void ln_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct ln_job *j = ctx;
  for (int64_t r = i0; r < i1; r++)
    ln_row(j->out + r * j->C, j->x + r * j->C, j->C, j->gamma, j->beta, j->eps);
}

int layer_norm_cpu(struct backend *be, struct tensor *out, const struct tensor *x,
                   const struct tensor *gamma, const struct tensor *beta, float eps) {
  static const char *op = "layer_norm";
  int64_t C = x->shape[x->ndim - 1];
  if (C == 0 || tensor_numel(x) == 0) return 0;
  struct ln_job j = {.x = x->data, .out = out->data, .C = C, .eps = eps};
  if (gamma && !(j.gamma = cpu_param_f32(be, gamma, CPU_W_GAMMA, op))) return -ENOMEM;
  if (beta && !(j.beta = cpu_param_f32(be, beta, CPU_W_BETA, op))) return -ENOMEM;
  parallel_for(cpu_ctx(be)->pool, tensor_numel(x) / C, (1 << 14) / C + 1, ln_task, &j);
  return 0;
}

/* softmax of one row, y == x allowed; a row of -Inf gives NaN (as PyTorch) */
CPU_CLONES void softmax_row_cpu(float *y, const float *x, int64_t n) {
  vf16 mv = VF_SPLAT(-__builtin_inff());
  int64_t i = 0;
  for (; i + VF_N <= n; i += VF_N) mv = VF_MAX(VF_LOAD(x + i), mv);
  float m = -__builtin_inff();
  for (int k = 0; k < VF_N; k++) m = mv[k] > m ? mv[k] : m;
  for (; i < n; i++) m = x[i] > m ? x[i] : m;
  vf16 acc = {0};
  for (i = 0; i + VF_N <= n; i += VF_N) {
    vf16 e = VF_EXP(VF_LOAD(x + i) - m);
    acc += e;
    VF_STORE(y + i, e);
  }
  if (i < n) {
    vf16 e = VF_EXP(VF_LOAD_PART(x + i, n - i) - m);
    for (int64_t k = n - i; k < VF_N; k++) e[k] = 0.0f;
    acc += e;
    VF_STORE_PART(y + i, e, n - i);
  }
  float s = 0;
  for (int k = 0; k < VF_N; k++) s += acc[k];
  float r = 1.0f / s;
  for (i = 0; i + VF_N <= n; i += VF_N) VF_STORE(y + i, VF_LOAD(y + i) * r);
  for (; i < n; i++) y[i] *= r;
}

struct sm_job {
  const float *x;
  float *out;
  int64_t C;
};

static void sm_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct sm_job *j = ctx;
  for (int64_t r = i0; r < i1; r++) softmax_row_cpu(j->out + r * j->C, j->x + r * j->C, j->C);
}

int softmax_cpu(struct backend *be, struct tensor *out, const struct tensor *x) {
  int64_t C = x->shape[x->ndim - 1];
  if (C == 0 || tensor_numel(x) == 0) return 0;
  struct sm_job j = {x->data, out->data, C};
  parallel_for(cpu_ctx(be)->pool, tensor_numel(x) / C, (1 << 14) / C + 1, sm_task, &j);
  return 0;
}
