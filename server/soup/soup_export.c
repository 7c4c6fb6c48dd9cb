/* soup_export.c: GET /soup/export. Writes an acquired soup version as a
 * safetensors file: the base's (diffusers) tensor names, the inference dtype,
 * metadata {"soup_version", "soup_hash", "soup_dtype"} plus the caller's.
 * The version must stay acquired while this runs. On a backend whose memory
 * is not host memory the version is first copied to the host (download).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "soup_internal.h"

static enum st_dtype to_st(enum dtype dt) {
  return dt == DT_F16 ? ST_F16 : dt == DT_BF16 ? ST_BF16 : ST_F32;
}

const void *soup_host_bytes(const struct soup_backend *be, const void *mem, size_t bytes,
                            void **to_free, char **err) {
  *to_free = NULL;
  if (be->host_memory) return mem;
  void *h = malloc(bytes ? bytes : 1);
  if (!h || !be->download || be->download(h, mem, bytes)) {
    free(h);
    if (be->download)
      *err = soup_strdupf("copying %zu bytes from the %s backend failed", bytes, be->name);
    else
      *err = soup_strdupf("the %s backend cannot copy its memory to the host", be->name);
    return NULL;
  }
  *to_free = h;
  return h;
}

/* The whole version's bytes are contiguous (one allocation, tensors in name
 * order): one host copy when the backend's memory is not host memory. */
static int build(const struct soup_version *v, const json_t *metadata, struct st_write_tensor **tw,
                 json_t **meta, void **host, char **err) {
  *tw = calloc(v->n_tensors ? v->n_tensors : 1, sizeof **tw);
  *meta = metadata ? json_deep_copy(metadata) : json_object();
  if (!*tw || !*meta) {
    *err = soup_strdupf("out of memory");
    return -ENOMEM;
  }
  size_t es = dtype_size(v->dtype), total = 0;
  for (size_t i = 0; i < v->n_tensors; i++) total += (size_t)v->tensors[i].numel * es;
  const uint8_t *base = v->n_tensors ? v->tensors[0].data : NULL;
  if (base) {
    base = soup_host_bytes(v->be, base, total, host, err);
    if (!base) return -EIO;
  }
  size_t off = 0;
  for (size_t i = 0; i < v->n_tensors; i++) {
    (*tw)[i].name = v->tensors[i].name;
    (*tw)[i].dtype = to_st(v->dtype);
    (*tw)[i].ndim = v->tensors[i].ndim;
    (*tw)[i].shape = v->tensors[i].shape;
    (*tw)[i].data = base + off;
    off += (size_t)v->tensors[i].numel * es;
  }
  char ver[32];
  snprintf(ver, sizeof ver, "%" PRIu64, v->version);
  json_object_set_new(*meta, "soup_version", json_string(ver));
  json_object_set_new(*meta, "soup_hash", json_string(v->hash_hex));
  json_object_set_new(*meta, "soup_dtype", json_string(dtype_name(v->dtype)));
  return 0;
}

int soup_export_fp(const struct soup_version *v, FILE *fp, const json_t *metadata, char **err) {
  struct st_write_tensor *tw = NULL;
  json_t *meta = NULL;
  void *host = NULL;
  int rc = build(v, metadata, &tw, &meta, &host, err);
  if (rc == 0) rc = st_write_fp(fp, tw, v->n_tensors, meta, err);
  free(tw);
  free(host);
  json_decref(meta);
  return rc;
}

int soup_export(const struct soup_version *v, const char *path, const json_t *metadata,
                char **err) {
  struct st_write_tensor *tw = NULL;
  json_t *meta = NULL;
  void *host = NULL;
  int rc = build(v, metadata, &tw, &meta, &host, err);
  if (rc == 0) rc = st_write(path, tw, v->n_tensors, meta, err);
  free(tw);
  free(host);
  json_decref(meta);
  return rc;
}
