/* soup_update.c: apply / rollback / materialize / switch and the reader
 * references (acquire / release) of the live version.
 *
 * apply: match + validate (separate read of the shard, no write), wait until
 * the spare copy has no readers, then ONE pass over the shard per tensor that
 * updates the accumulator in place, materializes the spare copy and hashes the
 * new accumulator (fused, while the chunk is in cache). The validation read
 * is kept separate so that a rejected shard changes nothing; it reads 2-4
 * bytes per parameter against the 22+ of the update pass. A failure inside
 * the update pass is undone exactly (the opposite delta on the tensors done).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "soup_internal.h"

/* Waits (s->mu held) until buf has no readers; 0 or -EBUSY. */
static int wait_no_readers(struct soup *s, struct soup_buf *b) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += s->wait_ms / 1000;
  ts.tv_nsec += (long)(s->wait_ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  while (b->refs > 0) {
    if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT && b->refs > 0) return -EBUSY;
  }
  return 0;
}

static int claim_spare(struct soup *s, char **err) {
  pthread_mutex_lock(&s->mu);
  struct soup_buf *b = &s->buf[1 - s->live];
  int rc = wait_no_readers(s, b);
  if (rc == 0)
    b->state = 0; /* being written: stale */
  else
    *err = soup_strdupf("the previous soup version is still used by %d generation(s) after %d ms",
                        b->refs, s->wait_ms);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

struct upd {
  struct soup *s;
  const struct soup_view *v;
  const size_t *map;
  int64_t delta, newK;
  struct soup_buf *out; /* spare to materialize, or NULL */
  int digest;           /* compute per-tensor digests */
  unsigned char *done;  /* [n] */
};

static int upd_one(void *ctx, size_t i) {
  struct upd *u = ctx;
  struct soup *s = u->s;
  const struct soup_meta *m = &s->t[i];
  const struct soup_view *x = &u->v[u->map[i]];
  void *out = u->out && u->newK > 0 ? u->out->tensors[i].data : NULL;
  int rc =
      s->be->accumulate(m->acc, x->data, (enum dtype)soup_st_to_dtype(x->dtype), m->numel, m->F,
                        u->delta, out, s->infer, u->newK, u->digest ? s->digest[i] : NULL);
  if (rc) return -EIO;
  u->done[i] = 1;
  if (u->out && u->newK == 0 &&
      s->be->convert(u->out->tensors[i].data, s->infer, m->base_data, m->base_dt, m->numel))
    return -EIO;
  return 0;
}

static int undo_one(void *ctx, size_t i) {
  struct upd *u = ctx;
  const struct soup_meta *m = &u->s->t[i];
  const struct soup_view *x = &u->v[u->map[i]];
  if (!u->done[i]) return 0;
  return u->s->be->accumulate(m->acc, x->data, (enum dtype)soup_st_to_dtype(x->dtype), m->numel,
                              m->F, -u->delta, NULL, u->s->infer, 0, NULL)
             ? -EIO
             : 0;
}

/* Matches and validates v; allocates *map. */
static int prepare(struct soup *s, const struct soup_view *v, size_t n, size_t **map, char **err) {
  *map = malloc(s->n * sizeof **map);
  if (!*map) {
    *err = soup_strdupf("out of memory");
    return -ENOMEM;
  }
  double t0 = soup_now_ms();
  if (soup_match(s, v, n, *map, NULL, 0, err) || soup_validate_values(s, v, *map, NULL, 0, err)) {
    free(*map);
    *map = NULL;
    return -EINVAL;
  }
  double ms = soup_now_ms() - t0;
  pthread_mutex_lock(&s->mu);
  s->last_validate_ms = ms;
  pthread_mutex_unlock(&s->mu);
  return 0;
}

/* The update pass; on failure undoes the tensors already done. */
static int run_update(struct upd *u, char **err) {
  struct soup *s = u->s;
  u->done = calloc(s->n, 1);
  if (!u->done) {
    *err = soup_strdupf("out of memory");
    return -ENOMEM;
  }
  int rc = soup_par_for(s, upd_one, u);
  if (rc) {
    int urc = soup_par_for(s, undo_one, u);
    *err = soup_strdupf("backend %s failed during the update%s", s->be->name,
                        urc ? "; the undo failed too: the accumulator is corrupt" : "");
    log_error("soup: %s", *err);
  }
  free(u->done);
  u->done = NULL;
  return rc;
}

static int apply_impl(struct soup *s, const struct soup_view *v, size_t n, int64_t kq_delta,
                      int full, char **err) {
  double t0 = soup_now_ms();
  size_t *map = NULL;
  if (kq_delta == 0 || kq_delta > SOUP_KQ_MAX || kq_delta < -SOUP_KQ_MAX) {
    *err = soup_strdupf("weight change %lld outside [-%lld, %lld] \\ {0} (units of 2^-16)",
                        (long long)kq_delta, (long long)SOUP_KQ_MAX, (long long)SOUP_KQ_MAX);
    return -EINVAL;
  }
  int64_t newK = s->K + kq_delta;
  if (newK < 0 || newK > SOUP_K_MAX) {
    *err = soup_strdupf("total weight would be %g, outside [0, %g]", soup_weight_value(newK),
                        soup_weight_value(SOUP_K_MAX));
    return -EINVAL;
  }
  int rc = prepare(s, v, n, &map, err);
  if (rc) return rc;
  if (!full) {
    struct upd u = {.s = s, .v = v, .map = map, .delta = kq_delta, .newK = newK};
    pthread_mutex_lock(&s->mu);
    s->buf[1 - s->live].state = 0; /* the spare no longer matches */
    pthread_mutex_unlock(&s->mu);
    rc = run_update(&u, err);
    if (rc == 0) {
      pthread_mutex_lock(&s->mu);
      s->K = newK;
      s->acc_state = s->next_state++;
      s->hash_hex[0] = 0;
      s->digests_stale = 1;
      s->undo_valid = 0;
      s->last_update_ms = soup_now_ms() - t0;
      pthread_mutex_unlock(&s->mu);
    }
    goto done;
  }
  if (s->digests_stale) {
    rc = -EINVAL;
    *err = soup_strdupf("soup_apply after soup_accumulate: call soup_materialize_spare first");
    goto done;
  }
  rc = claim_spare(s, err);
  if (rc) goto done;
  /* undo record: the exact state before this apply */
  s->undo_valid = 0;
  s->undo_K = s->K;
  s->undo_state = s->acc_state;
  memcpy(s->undo_hash, s->hash_hex, 65);
  memcpy(s->undo_digest, s->digest, s->n * sizeof *s->digest);
  struct soup_buf *spare = &s->buf[1 - s->live];
  struct upd u = {
      .s = s, .v = v, .map = map, .delta = kq_delta, .newK = newK, .out = spare, .digest = 1};
  rc = run_update(&u, err);
  if (rc) {
    memcpy(s->digest, s->undo_digest, s->n * sizeof *s->digest);
    goto done;
  }
  char hex[65];
  soup_hash_combine(s, newK, (const uint8_t(*)[32])s->digest, hex);
  pthread_mutex_lock(&s->mu);
  s->K = newK;
  s->acc_state = s->next_state++;
  memcpy(s->hash_hex, hex, 65);
  spare->state = s->acc_state;
  spare->ver.K = newK;
  memcpy(spare->ver.hash_hex, hex, 65);
  s->undo_valid = 1;
  s->last_update_ms = soup_now_ms() - t0;
  pthread_mutex_unlock(&s->mu);
done:
  free(map);
  return rc;
}

int soup_apply(struct soup *s, const struct soup_view *v, size_t n, int64_t kq_delta, char **err) {
  return apply_impl(s, v, n, kq_delta, 1, err);
}

int soup_accumulate(struct soup *s, const struct soup_view *v, size_t n, int64_t kq_delta,
                    char **err) {
  return apply_impl(s, v, n, kq_delta, 0, err);
}

int soup_accumulate_st(struct soup *s, const struct st_file *f, int64_t kq_delta, char **err) {
  struct soup_view *v = NULL;
  size_t n = 0;
  int rc = soup_views_from_st(f, &v, &n, err);
  if (rc == 0) rc = soup_accumulate(s, v, n, kq_delta, err);
  free(v);
  return rc;
}

int soup_rollback(struct soup *s, const struct soup_view *v, size_t n, int64_t kq_delta,
                  char **err) {
  size_t *map = NULL;
  if (!s->undo_valid || s->K - kq_delta != s->undo_K) {
    *err = soup_strdupf("nothing to roll back for a weight change of %lld", (long long)kq_delta);
    return -EINVAL;
  }
  int rc = prepare(s, v, n, &map, err);
  if (rc) return rc;
  struct upd u = {.s = s, .v = v, .map = map, .delta = -kq_delta, .newK = s->undo_K};
  rc = run_update(&u, err);
  if (rc == 0) {
    pthread_mutex_lock(&s->mu);
    s->K = s->undo_K;
    s->acc_state = s->undo_state;
    memcpy(s->hash_hex, s->undo_hash, 65);
    memcpy(s->digest, s->undo_digest, s->n * sizeof *s->digest);
    s->undo_valid = 0;
    pthread_mutex_unlock(&s->mu);
  }
  free(map);
  return rc;
}

int soup_apply_st(struct soup *s, const struct st_file *f, int64_t kq_delta, char **err) {
  struct soup_view *v = NULL;
  size_t n = 0;
  int rc = soup_views_from_st(f, &v, &n, err);
  if (rc == 0) rc = soup_apply(s, v, n, kq_delta, err);
  free(v);
  return rc;
}

int soup_rollback_st(struct soup *s, const struct st_file *f, int64_t kq_delta, char **err) {
  struct soup_view *v = NULL;
  size_t n = 0;
  int rc = soup_views_from_st(f, &v, &n, err);
  if (rc == 0) rc = soup_rollback(s, v, n, kq_delta, err);
  free(v);
  return rc;
}

struct mat {
  struct soup *s;
  struct soup_buf *b;
};

static int mat_one(void *ctx, size_t i) {
  struct mat *c = ctx;
  struct soup *s = c->s;
  const struct soup_meta *m = &s->t[i];
  void *out = c->b->tensors[i].data;
  int rc = s->K > 0 ? s->be->materialize(out, s->infer, m->acc, m->numel, m->F, s->K)
                    : s->be->convert(out, s->infer, m->base_data, m->base_dt, m->numel);
  if (rc == 0 && s->digests_stale) rc = s->be->hash(m->acc, m->numel, s->digest[i]);
  return rc ? -EIO : 0;
}

int soup_materialize_spare(struct soup *s, char **err) {
  double t0 = soup_now_ms();
  int rc = claim_spare(s, err);
  if (rc) return rc;
  struct soup_buf *spare = &s->buf[1 - s->live];
  struct mat c = {.s = s, .b = spare};
  rc = soup_par_for(s, mat_one, &c);
  if (rc) {
    *err = soup_strdupf("backend %s failed to materialize the soup", s->be->name);
    return rc;
  }
  char hex[65];
  if (s->digests_stale) soup_hash_combine(s, s->K, (const uint8_t(*)[32])s->digest, hex);
  pthread_mutex_lock(&s->mu);
  if (s->digests_stale) {
    memcpy(s->hash_hex, hex, 65);
    s->digests_stale = 0;
  }
  spare->state = s->acc_state;
  spare->ver.K = s->K;
  memcpy(spare->ver.hash_hex, s->hash_hex, 65);
  s->last_materialize_ms = soup_now_ms() - t0;
  pthread_mutex_unlock(&s->mu);
  return 0;
}

int soup_switch(struct soup *s, uint64_t version, char **err) {
  int rc = 0;
  pthread_mutex_lock(&s->mu);
  struct soup_buf *spare = &s->buf[1 - s->live];
  if (spare->refs > 0) {
    *err = soup_strdupf("the spare copy is still held by %d reader(s)", spare->refs);
    rc = -EBUSY;
  } else if (spare->state == 0 || spare->state != s->acc_state) {
    *err = soup_strdupf("the spare copy is not materialized from the current accumulator");
    rc = -EINVAL;
  } else {
    spare->ver.version = version;
    memcpy(spare->ver.hash_hex, s->hash_hex, 65);
    s->live = 1 - s->live;
  }
  pthread_mutex_unlock(&s->mu);
  if (rc == 0)
    log_info("soup: version %llu live, hash %.16s", (unsigned long long)version,
             s->buf[s->live].ver.hash_hex);
  return rc;
}

const struct soup_version *soup_acquire(struct soup *s) {
  pthread_mutex_lock(&s->mu);
  struct soup_buf *b = &s->buf[s->live];
  b->refs++;
  pthread_mutex_unlock(&s->mu);
  return &b->ver;
}

void soup_release(struct soup *s, const struct soup_version *v) {
  if (!v) return;
  pthread_mutex_lock(&s->mu);
  for (int i = 0; i < 2; i++) {
    if (&s->buf[i].ver == v) {
      if (s->buf[i].refs > 0)
        s->buf[i].refs--;
      else
        log_error("soup_release: version %llu released more often than acquired",
                  (unsigned long long)v->version);
    }
  }
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}
