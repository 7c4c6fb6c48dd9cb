/* soup_new.c: creating and freeing a soup, weight quantization, st_file views,
 * settings and statistics.
 *
 * F per tensor (soup.h): e = smallest integer with max|w_base| < 2^e, clamped
 * to [SOUP_E_MIN, SOUP_E_MAX]; F = 36 - 6 - e. The clamp keeps every
 * materialize step exact-scaled (no binary64 subnormals) and F in [-70, 40].
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "soup_internal.h"

#define SOUP_E_MIN (-10)
#define SOUP_E_MAX 100

double soup_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

char *soup_strdupf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *p = NULL;
  if (vasprintf(&p, fmt, ap) < 0) p = NULL;
  va_end(ap);
  return p;
}

int soup_st_to_dtype(enum st_dtype dt) {
  return dt == ST_F32 ? DT_F32 : dt == ST_F16 ? DT_F16 : dt == ST_BF16 ? DT_BF16 : -1;
}

int soup_weight_quantize(double k, int64_t *kq, char **err) {
  if (!isfinite(k) || k <= 0 || k * 65536.0 >= (double)SOUP_KQ_MAX + 0.5) {
    if (err) *err = soup_strdupf("weight %g outside (0, %g]", k, soup_weight_value(SOUP_KQ_MAX));
    return -1;
  }
  int64_t q = llround(k * 65536.0); /* k * 2^16 is exact in binary64 */
  if (q < 1) {
    if (err) *err = soup_strdupf("weight %g rounds to 0 in units of 2^-16", k);
    return -1;
  }
  *kq = q;
  return 0;
}

int soup_views_from_st(const struct st_file *f, struct soup_view **views, size_t *n, char **err) {
  struct soup_view *v = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *v);
  if (!v) {
    *err = soup_strdupf("out of memory");
    return -ENOMEM;
  }
  for (size_t i = 0; i < f->n_tensors; i++) {
    const struct st_tensor *t = &f->tensors[i];
    v[i].name = t->name;
    v[i].dtype = t->dtype;
    v[i].ndim = t->ndim;
    for (int d = 0; d < t->ndim && d < ST_MAX_DIMS; d++) v[i].shape[d] = t->shape[d];
    v[i].data = t->data;
  }
  *views = v;
  *n = f->n_tensors;
  return 0;
}

static int64_t view_numel(const struct soup_view *v) {
  int64_t n = 1;
  for (int d = 0; d < v->ndim; d++) n *= v->shape[d];
  return n;
}

/* Exponent e with max|w| < 2^e, from the largest absolute bit pattern
 * (ordered like magnitudes); INT32_MIN if a value is NaN/Inf (*bad: index). */
static int base_exponent(enum dtype dt, const void *data, int64_t n, int64_t *bad) {
  uint32_t mx = 0, inf = dt == DT_F32 ? 0x7f800000u : dt == DT_F16 ? 0x7c00u : 0x7f80u;
  if (dt == DT_F32) {
    for (int64_t i = 0; i < n; i++) {
      uint32_t u;
      memcpy(&u, (const unsigned char *)data + 4 * i, 4);
      u &= 0x7fffffffu;
      mx = u > mx ? u : mx;
    }
  } else {
    for (int64_t i = 0; i < n; i++) {
      uint32_t u = soup_load_u16(data, i) & 0x7fffu;
      mx = u > mx ? u : mx;
    }
  }
  if (mx >= inf) {
    for (int64_t i = 0;; i++) {
      uint32_t u;
      if (dt == DT_F32)
        memcpy(&u, (const unsigned char *)data + 4 * i, 4);
      else
        u = soup_load_u16(data, i);
      if ((u & (dt == DT_F32 ? 0x7fffffffu : 0x7fffu)) >= inf) {
        *bad = i;
        return INT32_MIN;
      }
    }
  }
  double x;
  if (dt == DT_F32) {
    float f;
    memcpy(&f, &mx, 4);
    x = f;
  } else {
    x = dt == DT_F16 ? f16_to_f32((uint16_t)mx) : bf16_to_f32((uint16_t)mx);
  }
  if (x == 0) return SOUP_E_MIN;
  int e;
  frexp(x, &e); /* x = f * 2^e, f in [0.5, 1): max|w| < 2^e */
  return e < SOUP_E_MIN ? SOUP_E_MIN : e > SOUP_E_MAX ? SOUP_E_MAX : e;
}

struct fctx {
  struct soup *s;
  int64_t *bad; /* [n] index of a NaN/Inf, or -1 */
};

static int f_one(void *ctx, size_t i) {
  struct fctx *c = ctx;
  struct soup_meta *m = &c->s->t[i];
  int e = base_exponent(m->base_dt, m->base_data, m->numel, &c->bad[i]);
  if (e != INT32_MIN) m->F = SOUP_Q_LIMIT_BITS - SOUP_HEADROOM_BITS - e;
  return 0;
}

static int cmp_view_ptr(const void *a, const void *b) {
  const struct soup_view *x = *(const struct soup_view *const *)a;
  const struct soup_view *y = *(const struct soup_view *const *)b;
  return strcmp(x->name, y->name);
}

static int cmp_size_desc(const void *a, const void *b, void *ctx) {
  const struct soup *s = ctx;
  int64_t x = s->t[*(const size_t *)a].numel, y = s->t[*(const size_t *)b].numel;
  return x < y ? 1 : x > y ? -1 : 0;
}

static int buf_init(struct soup *s, struct soup_buf *b) {
  size_t dsz = dtype_size(s->infer);
  b->mem = s->be->alloc((size_t)s->params * dsz);
  b->tensors = calloc(s->n ? s->n : 1, sizeof *b->tensors);
  if (!b->mem || !b->tensors) return -ENOMEM;
  size_t off = 0;
  for (size_t i = 0; i < s->n; i++) {
    struct soup_tensor *t = &b->tensors[i];
    t->name = s->t[i].name;
    t->ndim = s->t[i].ndim;
    memcpy(t->shape, s->t[i].shape, sizeof t->shape);
    t->numel = s->t[i].numel;
    t->F = s->t[i].F;
    t->data = (uint8_t *)b->mem + off * dsz;
    off += (size_t)s->t[i].numel;
  }
  b->ver.dtype = s->infer;
  b->ver.be = s->be;
  b->ver.n_tensors = s->n;
  b->ver.tensors = b->tensors;
  return 0;
}

/* Digests of the all-zero accumulators: one SHA-256 per distinct size, in
 * parallel (s->order is sorted by size, so equal sizes are adjacent; the
 * first of each run hashes, the others copy). */
static int zero_leader(const struct soup *s, size_t k) {
  return k == 0 || s->t[s->order[k - 1]].numel != s->t[s->order[k]].numel;
}

static int hash_zero_one(void *ctx, size_t i) {
  struct soup *s = ctx;
  size_t k = 0;
  while (s->order[k] != i) k++; /* n is a few hundred: fine at start-up */
  if (!zero_leader(s, k)) return 0;
  return s->be->hash(s->t[i].acc, s->t[i].numel, s->digest[i]) ? -EIO : 0;
}

static int hash_zero(struct soup *s) {
  int rc = soup_par_for(s, hash_zero_one, s);
  if (rc) return rc;
  for (size_t k = 1; k < s->n; k++)
    if (!zero_leader(s, k)) memcpy(s->digest[s->order[k]], s->digest[s->order[k - 1]], 32);
  return 0;
}

static int base_one(void *ctx, size_t i) {
  struct soup *s = ctx;
  struct soup_buf *b = &s->buf[s->live];
  return s->be->convert(b->tensors[i].data, s->infer, s->t[i].base_data, s->t[i].base_dt,
                        s->t[i].numel)
             ? -EIO
             : 0;
}

int soup_new_views(const struct soup_view *base, size_t n, const struct soup_backend *be,
                   enum dtype infer, struct soup **out, char **err) {
  int rc = -EINVAL;
  const struct soup_view **sorted = NULL;
  struct soup *s = calloc(1, sizeof *s);
  if (!s) {
    *err = soup_strdupf("out of memory");
    return -ENOMEM;
  }
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  s->be = be;
  s->infer = infer;
  s->wait_ms = 30000;
  s->threads = be->parallel > 0 ? be->parallel : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (s->threads < 1) s->threads = 1;
  if (infer != DT_F32 && infer != DT_F16 && infer != DT_BF16) {
    *err = soup_strdupf("inference dtype %s is not F32, F16 or BF16", dtype_name(infer));
    goto fail;
  }
  if (n == 0) {
    *err = soup_strdupf("the base has no tensors");
    goto fail;
  }
  sorted = malloc(n * sizeof *sorted);
  s->t = calloc(n, sizeof *s->t);
  s->order = malloc(n * sizeof *s->order);
  s->digest = calloc(n, sizeof *s->digest);
  s->undo_digest = calloc(n, sizeof *s->undo_digest);
  if (!sorted || !s->t || !s->order || !s->digest || !s->undo_digest) {
    rc = -ENOMEM;
    *err = soup_strdupf("out of memory");
    goto fail;
  }
  for (size_t i = 0; i < n; i++) sorted[i] = &base[i];
  qsort(sorted, n, sizeof *sorted, cmp_view_ptr);
  s->n = n;
  for (size_t i = 0; i < n; i++) {
    const struct soup_view *v = sorted[i];
    struct soup_meta *m = &s->t[i];
    if (i > 0 && strcmp(sorted[i - 1]->name, v->name) == 0) {
      *err = soup_strdupf("base: duplicate tensor %s", v->name);
      goto fail;
    }
    if (soup_st_to_dtype(v->dtype) < 0 || v->ndim < 0 || v->ndim > ST_MAX_DIMS) {
      *err = soup_strdupf("base: tensor %s has dtype %s (F32, F16 or BF16 needed)", v->name,
                          st_dtype_name(v->dtype));
      goto fail;
    }
    m->name = strdup(v->name);
    if (!m->name) {
      rc = -ENOMEM;
      *err = soup_strdupf("out of memory");
      goto fail;
    }
    m->ndim = v->ndim;
    memcpy(m->shape, v->shape, sizeof m->shape);
    m->numel = view_numel(v);
    m->base_dt = (enum dtype)soup_st_to_dtype(v->dtype);
    m->base_data = v->data;
    s->params += m->numel;
    s->order[i] = i;
  }
  qsort_r(s->order, n, sizeof *s->order, cmp_size_desc, s);
  {
    struct fctx fc = {.s = s, .bad = malloc(n * sizeof(int64_t))};
    if (!fc.bad) {
      rc = -ENOMEM;
      *err = soup_strdupf("out of memory");
      goto fail;
    }
    for (size_t i = 0; i < n; i++) fc.bad[i] = -1;
    soup_par_for(s, f_one, &fc);
    for (size_t i = 0; i < n; i++)
      if (fc.bad[i] >= 0) {
        *err = soup_strdupf("base: tensor %s has a NaN/Inf at index %lld", s->t[i].name,
                            (long long)fc.bad[i]);
        free(fc.bad);
        goto fail;
      }
    free(fc.bad);
  }
  rc = -ENOMEM;
  s->acc_mem = be->alloc((size_t)s->params * sizeof(int64_t));
  if (!s->acc_mem || buf_init(s, &s->buf[0]) || buf_init(s, &s->buf[1])) {
    *err = soup_strdupf("out of memory for a soup of %lld parameters", (long long)s->params);
    goto fail;
  }
  int64_t off = 0;
  for (size_t i = 0; i < n; i++) {
    s->t[i].acc = s->acc_mem + off;
    off += s->t[i].numel;
  }
  rc = -EIO;
  if (hash_zero(s) || soup_par_for(s, base_one, s)) {
    *err = soup_strdupf("backend %s failed to hash or convert the base", be->name);
    goto fail;
  }
  s->K = 0;
  s->next_state = 1;
  s->acc_state = s->next_state++;
  soup_hash_combine(s, 0, (const uint8_t(*)[32])s->digest, s->hash_hex);
  s->live = 0;
  s->buf[0].state = s->acc_state;
  s->buf[0].ver.version = 0;
  s->buf[0].ver.K = 0;
  memcpy(s->buf[0].ver.hash_hex, s->hash_hex, 65);
  free(sorted);
  log_info("soup: %zu tensors, %lld parameters, inference %s, backend %s, hash %.16s", s->n,
           (long long)s->params, dtype_name(infer), be->name, s->hash_hex);
  *out = s;
  return 0;
fail:
  free(sorted);
  soup_free(s);
  return rc;
}

int soup_new(const struct st_file *base, const struct soup_backend *be, enum dtype infer,
             struct soup **out, char **err) {
  struct soup_view *v = NULL;
  size_t n = 0;
  int rc = soup_views_from_st(base, &v, &n, err);
  if (rc == 0) rc = soup_new_views(v, n, be, infer, out, err);
  free(v);
  return rc;
}

void soup_free(struct soup *s) {
  if (!s) return;
  for (int b = 0; b < 2; b++) {
    if (s->buf[b].refs) log_error("soup_free: version still held by %d readers", s->buf[b].refs);
    if (s->buf[b].mem) s->be->free(s->buf[b].mem);
    free(s->buf[b].tensors);
  }
  if (s->acc_mem) s->be->free(s->acc_mem);
  for (size_t i = 0; s->t && i < s->n; i++) free(s->t[i].name);
  free(s->t);
  free(s->order);
  free(s->digest);
  free(s->undo_digest);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

void soup_set_wait_ms(struct soup *s, int ms) {
  pthread_mutex_lock(&s->mu);
  s->wait_ms = ms < 0 ? 0 : ms;
  pthread_mutex_unlock(&s->mu);
}

void soup_stats_get(const struct soup *s, struct soup_stats *st) {
  pthread_mutex_lock((pthread_mutex_t *)&s->mu);
  st->params = s->params;
  st->n_tensors = s->n;
  st->bytes = (size_t)s->params * (8 + 2 * dtype_size(s->infer));
  st->K = s->K;
  st->live_version = s->buf[s->live].ver.version;
  st->last_update_ms = s->last_update_ms;
  st->last_validate_ms = s->last_validate_ms;
  st->last_materialize_ms = s->last_materialize_ms;
  pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
}
