/* soup_rebuild.c: soups from scratch over a recipe, a list of (shard, kq):
 * POST /soup/verify (the hash only) and soup_build (per-request mixes, search
 * candidates: the hash and a materialized inference copy of its own). The
 * live soup is never touched: one tensor at a time per thread (a zeroed
 * scratch accumulator of that tensor's size), so scratch memory stays bounded
 * by threads x the largest tensor. Reads only the soup's immutable tensor
 * table (names, shapes, F, base data): safe to run while an update is in
 * progress. The rules are the live soup's (same accumulate and materialize
 * ops in the same order), so equal recipes give equal bits and hashes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "soup_internal.h"

struct rb {
  const struct soup *s;
  const struct soup_source *src;
  size_t n_src;
  size_t **maps;         /* [n_src][s->n] */
  uint8_t (*digest)[32]; /* [s->n] */
  int64_t *bad;          /* [s->n]: index of the source that failed, or -1 */
  int64_t K;
  struct soup_tensor *out; /* [s->n] or NULL: materialize here too */
};

/* A built soup: the version first (soup_built_free casts back). */
struct built {
  struct soup_version ver;
  struct soup_tensor *tensors;
  void *mem;
};

static int rb_one(void *ctx, size_t i) {
  struct rb *r = ctx;
  const struct soup_meta *m = &r->s->t[i];
  const struct soup_backend *be = r->s->be;
  int64_t *acc = be->alloc((size_t)(m->numel ? m->numel : 1) * sizeof(int64_t));
  if (!acc) return -ENOMEM;
  int rc = 0;
  void *out = r->out ? r->out[i].data : NULL;
  for (size_t j = 0; j < r->n_src && rc == 0; j++) {
    const struct soup_view *x = &r->src[j].v[r->maps[j][i]];
    int last = j + 1 == r->n_src;
    enum dtype dt = (enum dtype)soup_st_to_dtype(x->dtype);
    int64_t badi = 0;
    if (be->validate(x->data, dt, m->numel, m->F, &badi)) {
      r->bad[i] = (int64_t)j;
      rc = -EINVAL;
    } else if (be->accumulate(acc, x->data, dt, m->numel, m->F, r->src[j].kq, last ? out : NULL,
                              r->s->infer, r->K, last ? r->digest[i] : NULL)) {
      rc = -EIO;
    }
  }
  if (rc == 0 && r->n_src == 0 && be->hash(acc, m->numel, r->digest[i])) rc = -EIO;
  if (rc == 0 && r->n_src == 0 && out &&
      be->convert(out, r->s->infer, m->base_data, m->base_dt, m->numel))
    rc = -EIO;
  be->free(acc);
  return rc;
}

static int from_scratch(const struct soup *s, const struct soup_source *srcs, size_t n_srcs,
                        struct soup_tensor *out, int64_t *K_out, char hex[65], char **err) {
  int rc = -ENOMEM;
  int64_t K = 0;
  struct rb r = {.s = s, .src = srcs, .n_src = n_srcs};
  r.maps = calloc(n_srcs ? n_srcs : 1, sizeof *r.maps);
  r.digest = calloc(s->n, sizeof *r.digest);
  r.bad = malloc(s->n * sizeof *r.bad);
  if (!r.maps || !r.digest || !r.bad) {
    *err = soup_strdupf("out of memory");
    goto done;
  }
  for (size_t i = 0; i < s->n; i++) r.bad[i] = -1;
  rc = -EINVAL;
  for (size_t j = 0; j < n_srcs; j++) {
    if (srcs[j].kq < 1 || srcs[j].kq > SOUP_KQ_MAX) {
      *err = soup_strdupf("source %zu: weight %lld outside [1, %lld]", j, (long long)srcs[j].kq,
                          (long long)SOUP_KQ_MAX);
      goto done;
    }
    K += srcs[j].kq;
    r.maps[j] = malloc(s->n * sizeof **r.maps);
    if (!r.maps[j]) {
      rc = -ENOMEM;
      *err = soup_strdupf("out of memory");
      goto done;
    }
    char *e = NULL;
    if (soup_match(s, srcs[j].v, srcs[j].n, r.maps[j], NULL, 0, &e)) {
      *err = soup_strdupf("source %zu: %s", j, e ? e : "does not match the base");
      free(e);
      goto done;
    }
  }
  if (K > SOUP_K_MAX) {
    *err = soup_strdupf("total weight %g exceeds %g", soup_weight_value(K),
                        soup_weight_value(SOUP_K_MAX));
    goto done;
  }
  r.K = K;
  r.out = out;
  rc = soup_par_for(s, rb_one, &r);
  if (rc) {
    for (size_t i = 0; i < s->n; i++)
      if (r.bad[i] >= 0) {
        *err = soup_strdupf("source %lld: tensor %s has a value that is not finite or out of "
                            "range",
                            (long long)r.bad[i], s->t[i].name);
        break;
      }
    if (!*err) *err = soup_strdupf("rebuild failed (%s)", rc == -ENOMEM ? "out of memory" : "I/O");
    goto done;
  }
  soup_hash_combine(s, K, (const uint8_t(*)[32])r.digest, hex);
  *K_out = K;
done:
  for (size_t j = 0; r.maps && j < n_srcs; j++) free(r.maps[j]);
  free(r.maps);
  free(r.digest);
  free(r.bad);
  return rc;
}

int soup_rebuild_hash(const struct soup *s, const struct soup_source *srcs, size_t n_srcs,
                      char hex[65], char **err) {
  int64_t K;
  return from_scratch(s, srcs, n_srcs, NULL, &K, hex, err);
}

size_t soup_built_bytes(const struct soup *s) {
  return (size_t)s->params * dtype_size(s->infer);
}

void soup_built_free(struct soup_version *v) {
  if (!v) return;
  struct built *b = (struct built *)v;
  v->be->free(b->mem);
  free(b->tensors);
  free(b);
}

int soup_build(const struct soup *s, const struct soup_source *srcs, size_t n_srcs,
               struct soup_version **out, char **err) {
  size_t dsz = dtype_size(s->infer);
  struct built *b = calloc(1, sizeof *b);
  if (b) b->tensors = calloc(s->n ? s->n : 1, sizeof *b->tensors);
  if (b && b->tensors) b->mem = s->be->alloc(soup_built_bytes(s) ? soup_built_bytes(s) : 1);
  if (!b || !b->tensors || !b->mem) {
    if (b && b->mem) s->be->free(b->mem);
    if (b) free(b->tensors);
    free(b);
    *err = soup_strdupf("out of memory for a soup of %zu bytes", soup_built_bytes(s));
    return -ENOMEM;
  }
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
  int rc = from_scratch(s, srcs, n_srcs, b->tensors, &b->ver.K, b->ver.hash_hex, err);
  if (rc) {
    soup_built_free(&b->ver);
    return rc;
  }
  *out = &b->ver;
  return 0;
}
