/* soup_snapshot.c: a snapshot of the exact accumulator for fast restarts
 * (DESIGN.md 5.6), as a safetensors file: one I64 tensor per soup tensor
 * (same name and shape, the int64 accumulator, little-endian) and metadata
 * {"soup_format": "soupd-acc-1", "soup_version", "soup_hash", "soup_K"}.
 *
 * Invariant: a snapshot is loaded only if the hash recomputed from its bytes,
 * its K and the running soup's names, shapes and F (so the same base) equals
 * the hash it records; the check runs before the accumulator is touched, so a
 * corrupt or foreign snapshot changes nothing. Writing goes to path.tmp, is
 * fsynced and renamed over path (atomic). Both calls belong to the single
 * writer (serialized with apply/switch). On a backend whose memory is not
 * host memory the accumulator moves through its download/upload ops.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "soup_internal.h"

#define SNAP_FORMAT "soupd-acc-1"

int soup_snapshot_write(struct soup *s, const char *path, uint64_t version, char **err) {
  int rc = -ENOMEM;
  char *tmp = soup_strdupf("%s.tmp", path);
  struct st_write_tensor *tw = calloc(s->n, sizeof *tw);
  json_t *meta = json_object();
  char hex[65], buf[32];
  void *host = NULL;
  if (!tmp || !tw || !meta) {
    *err = soup_strdupf("out of memory");
    goto done;
  }
  if (s->digests_stale) {
    rc = -EINVAL;
    *err = soup_strdupf("snapshot of a soup whose hash is stale (materialize it first)");
    goto done;
  }
  soup_hash_hex(s, hex);
  const int64_t *acc = soup_host_bytes(s->be, s->acc_mem, (size_t)s->params * 8, &host, err);
  if (!acc) {
    rc = -EIO;
    goto done;
  }
  for (size_t i = 0; i < s->n; i++) {
    tw[i].name = s->t[i].name;
    tw[i].dtype = ST_I64;
    tw[i].ndim = s->t[i].ndim;
    tw[i].shape = s->t[i].shape;
    tw[i].data = acc + (s->t[i].acc - s->acc_mem);
  }
  json_object_set_new(meta, "soup_format", json_string(SNAP_FORMAT));
  snprintf(buf, sizeof buf, "%" PRIu64, version);
  json_object_set_new(meta, "soup_version", json_string(buf));
  json_object_set_new(meta, "soup_hash", json_string(hex));
  snprintf(buf, sizeof buf, "%" PRId64, s->K);
  json_object_set_new(meta, "soup_K", json_string(buf));
  rc = st_write(tmp, tw, s->n, meta, err);
  if (rc) goto done;
  int fd = open(tmp, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0 || rename(tmp, path) != 0) {
    rc = -EIO;
    *err = soup_strdupf("snapshot %s: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    unlink(tmp);
    goto done;
  }
  close(fd);
  rc = 0;
done:
  free(host);
  free(tmp);
  free(tw);
  json_decref(meta);
  return rc;
}

struct lctx {
  const struct soup *s;
  const struct st_file *f;
  const size_t *map; /* soup tensor -> file tensor */
  uint8_t (*digest)[32];
  int copy;
};

static int load_one(void *ctx, size_t i) {
  struct lctx *c = ctx;
  const struct st_tensor *t = &c->f->tensors[c->map[i]];
  const struct soup_meta *m = &c->s->t[i];
  if (c->copy) {
    if (c->s->be->host_memory) {
      memcpy(m->acc, t->data, (size_t)m->numel * 8);
      return 0;
    }
    return c->s->be->upload(m->acc, t->data, (size_t)m->numel * 8) ? -EIO : 0;
  }
  /* hash the file's bytes as they are (LE int64, possibly unaligned) */
  int64_t *tmp = malloc((size_t)(m->numel ? m->numel : 1) * 8);
  if (!tmp) return -ENOMEM;
  memcpy(tmp, t->data, (size_t)m->numel * 8);
  int rc = c->s->be->hash(tmp, m->numel, c->digest[i]) ? -EIO : 0;
  free(tmp);
  return rc;
}

static const char *meta_str(const struct st_file *f, const char *key) {
  return f->metadata ? json_string_value(json_object_get(f->metadata, key)) : NULL;
}

int soup_snapshot_load(struct soup *s, const char *path, uint64_t *version, char hash[65],
                       char **err) {
  struct st_file *f = NULL;
  size_t *map = NULL;
  uint8_t(*digest)[32] = NULL;
  if (!s->be->host_memory && !s->be->upload) {
    *err = soup_strdupf("the %s backend cannot load snapshots (no upload op)", s->be->name);
    return -ENOTSUP;
  }
  int rc = st_open(path, &f, err);
  if (rc) return rc;
  rc = -EINVAL;
  const char *fmt = meta_str(f, "soup_format"), *ver = meta_str(f, "soup_version");
  const char *h = meta_str(f, "soup_hash"), *ks = meta_str(f, "soup_K");
  if (!fmt || strcmp(fmt, SNAP_FORMAT) != 0 || !ver || !h || strlen(h) != 64 || !ks) {
    *err = soup_strdupf("%s: not a soupd accumulator snapshot", path);
    goto done;
  }
  char *end = NULL;
  long long K = strtoll(ks, &end, 10);
  unsigned long long v = strtoull(ver, NULL, 10);
  if (*end || K < 0 || K > SOUP_K_MAX || f->n_tensors != s->n) {
    *err = soup_strdupf("%s: K or tensor count does not fit this soup", path);
    goto done;
  }
  map = malloc(s->n * sizeof *map);
  digest = calloc(s->n, sizeof *digest);
  if (!map || !digest) {
    rc = -ENOMEM;
    *err = soup_strdupf("out of memory");
    goto done;
  }
  for (size_t i = 0; i < s->n; i++) {
    const struct st_tensor *t = st_find(f, s->t[i].name);
    int same = t && t->dtype == ST_I64 && t->ndim == s->t[i].ndim;
    for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == s->t[i].shape[d];
    if (!same) {
      *err = soup_strdupf("%s: tensor %s missing or of another shape/dtype", path, s->t[i].name);
      goto done;
    }
    map[i] = (size_t)(t - f->tensors);
  }
  struct lctx c = {.s = s, .f = f, .map = map, .digest = digest, .copy = 0};
  rc = soup_par_for(s, load_one, &c);
  if (rc) {
    *err = soup_strdupf("%s: hashing failed", path);
    goto done;
  }
  char hex[65];
  soup_hash_combine(s, (int64_t)K, (const uint8_t(*)[32])digest, hex);
  if (strcmp(hex, h) != 0) {
    rc = -EINVAL;
    *err = soup_strdupf("%s: recorded hash %.16s but the content hashes to %.16s (corrupt, or "
                        "another base)",
                        path, h, hex);
    goto done;
  }
  /* verified: take it */
  c.copy = 1;
  if (soup_par_for(s, load_one, &c)) {
    /* only a device upload can fail here: the accumulator is now unknown */
    pthread_mutex_lock(&s->mu);
    s->hash_hex[0] = 0;
    s->digests_stale = 1;
    s->undo_valid = 0;
    s->buf[1 - s->live].state = 0;
    pthread_mutex_unlock(&s->mu);
    rc = -EIO;
    *err = soup_strdupf("%s: uploading the accumulator failed; the soup must be rebuilt", path);
    goto done;
  }
  pthread_mutex_lock(&s->mu);
  memcpy(s->digest, digest, s->n * sizeof *digest);
  s->K = (int64_t)K;
  s->acc_state = s->next_state++;
  memcpy(s->hash_hex, hex, 65);
  s->digests_stale = 0;
  s->undo_valid = 0;
  s->buf[1 - s->live].state = 0;
  pthread_mutex_unlock(&s->mu);
  if (version) *version = v;
  if (hash) memcpy(hash, hex, 65);
  rc = 0;
done:
  free(map);
  free(digest);
  st_close(f);
  return rc;
}
