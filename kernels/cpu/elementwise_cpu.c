/* elementwise_cpu.c: unary activations, geglu, add, mul, add_channel and
 * axpby on the CPU, split over the pool in chunks of 32K elements.
 *
 * out may alias an input for every op here except geglu (whose out is half
 * the width of x). Activations follow PyTorch: silu x/(1+e^-x), gelu
 * 0.5x(1+erf(x/sqrt2)) (as 0.5x erfc(-x/sqrt2)) (as 0.5x erfc(-x/sqrt2)), gelu_tanh
 * 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3))), quick_gelu x*sigmoid(1.702x).
 */
#include "cpu_impl.h"
#include "vecmath.h"

#define EW_GRAIN (1 << 15)

/* y[i] = act(x[i]) for one of the unary ops, 16 lanes at a time */
#define ACT(v, op)                                                                                 \
  ((op) == UNARY_SILU   ? VF_XSIGMOID(v, 1.0f)                                                     \
   : (op) == UNARY_GELU ? VF_GELU(v)                                                               \
   : (op) == UNARY_GELU_TANH                                                                       \
       ? VF_XSIGMOID(v, 2.0f * 0.7978845608028654f * (1.0f + 0.044715f * v * v))                   \
       : VF_XSIGMOID(v, 1.702f))

CPU_CLONES static void unary_range(float *y, const float *x, int64_t n, int op) {
  int64_t i = 0;
  for (; i + VF_N <= n; i += VF_N) {
    vf16 v = VF_LOAD(x + i);
    VF_STORE(y + i, ACT(v, op));
  }
  if (i < n) {
    vf16 v = VF_LOAD_PART(x + i, n - i);
    VF_STORE_PART(y + i, ACT(v, op), n - i);
  }
}

CPU_CLONES static void geglu_row(float *y, const float *x, int64_t D) {
  int64_t i = 0;
  for (; i + VF_N <= D; i += VF_N) VF_STORE(y + i, VF_LOAD(x + i) * VF_GELU(VF_LOAD(x + D + i)));
  if (i < D)
    VF_STORE_PART(y + i, VF_LOAD_PART(x + i, D - i) * VF_GELU(VF_LOAD_PART(x + D + i, D - i)),
                  D - i);
}

struct ew_job {
  float *out;
  const float *a, *b;
  float alpha, beta;
  int op;
  int64_t inner; /* geglu: D; add_channel: trailing size */
};

static void unary_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct ew_job *j = ctx;
  unary_range(j->out + i0, j->a + i0, i1 - i0, j->op);
}

int unary_cpu(struct backend *be, struct tensor *out, const struct tensor *x, enum unary_op op) {
  struct ew_job j = {.out = out->data, .a = x->data, .op = (int)op};
  parallel_for(cpu_ctx(be)->pool, tensor_numel(x), EW_GRAIN, unary_task, &j);
  return 0;
}

static void geglu_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct ew_job *j = ctx;
  int64_t D = j->inner;
  for (int64_t r = i0; r < i1; r++) {
    geglu_row(j->out + r * D, j->a + r * 2 * D, D);
  }
}

int geglu_cpu(struct backend *be, struct tensor *out, const struct tensor *x) {
  int64_t D = x->shape[x->ndim - 1] / 2;
  if (D == 0 || tensor_numel(out) == 0) return 0;
  struct ew_job j = {.out = out->data, .a = x->data, .inner = D};
  parallel_for(cpu_ctx(be)->pool, tensor_numel(out) / D, EW_GRAIN / D + 1, geglu_task, &j);
  return 0;
}

CPU_CLONES static void binary_range(float *y, const float *a, const float *b, int64_t n, int op,
                                    float alpha, float beta) {
  int64_t i = 0;
  if (op == 0)
    for (; i + VF_N <= n; i += VF_N) VF_STORE(y + i, VF_LOAD(a + i) + VF_LOAD(b + i));
  else if (op == 1)
    for (; i + VF_N <= n; i += VF_N) VF_STORE(y + i, VF_LOAD(a + i) * VF_LOAD(b + i));
  else if (b)
    for (; i + VF_N <= n; i += VF_N)
      VF_STORE(y + i, alpha * VF_LOAD(a + i) + beta * VF_LOAD(b + i));
  else
    for (; i + VF_N <= n; i += VF_N) VF_STORE(y + i, alpha * VF_LOAD(a + i));
  for (; i < n; i++)
    y[i] = op == 0   ? a[i] + b[i]
           : op == 1 ? a[i] * b[i]
           : b       ? alpha * a[i] + beta * b[i]
                     : alpha * a[i];
}

static void binary_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct ew_job *j = ctx;
  binary_range(j->out + i0, j->a + i0, j->b ? j->b + i0 : NULL, i1 - i0, j->op, j->alpha, j->beta);
}

static int binary(struct backend *be, struct tensor *out, const struct tensor *a,
                  const struct tensor *b, int op, const char *name) {
  struct ew_job j = {.out = out->data, .a = a->data, .b = b->data, .op = op};
  parallel_for(cpu_ctx(be)->pool, tensor_numel(a), EW_GRAIN, binary_task, &j);
  return 0;
}

int add_cpu(struct backend *be, struct tensor *out, const struct tensor *a,
            const struct tensor *b) {
  return binary(be, out, a, b, 0, "add");
}

int mul_cpu(struct backend *be, struct tensor *out, const struct tensor *a,
            const struct tensor *b) {
  return binary(be, out, a, b, 1, "mul");
}

int axpby_cpu(struct backend *be, struct tensor *out, float alpha, const struct tensor *x,
              float beta, const struct tensor *y) {
  struct ew_job j = {.out = out->data,
                     .a = x->data,
                     .b = y ? y->data : NULL,
                     .op = 2,
                     .alpha = alpha,
                     .beta = beta};
  parallel_for(cpu_ctx(be)->pool, tensor_numel(x), EW_GRAIN, binary_task, &j);
  return 0;
}

static void add_channel_task(void *ctx, int64_t i0, int64_t i1, int tid) {
  struct ew_job *j = ctx;
  for (int64_t nc = i0; nc < i1; nc++) {
    float bv = j->b[nc];
    const float *a = j->a + nc * j->inner;
    float *y = j->out + nc * j->inner;
    for (int64_t i = 0; i < j->inner; i++) y[i] = a[i] + bv;
  }
}

int add_channel_cpu(struct backend *be, struct tensor *out, const struct tensor *a,
                    const struct tensor *b) {
  int64_t N = a->shape[0], C = a->shape[1];
  if (N * C == 0) return 0;
  struct ew_job j = {
      .out = out->data, .a = a->data, .b = b->data, .inner = tensor_numel(a) / (N * C)};
  parallel_for(cpu_ctx(be)->pool, N * C, EW_GRAIN / (j.inner + 1) + 1, add_channel_task, &j);
  return 0;
}
