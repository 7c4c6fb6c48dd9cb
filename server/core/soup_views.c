/* soup_views.c: the JSON views of the live soup (GET /soup, the "soup"
 * member of every change's reply and of a generation's result): version,
 * hash, members with their shares, base, device and update times. Reads
 * only: the soup through soup_acquire, the registry's active rows. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "formats/model_dir.h"
#include "log.h"
#include "registry/registry.h"
#include "soup/soup.h"

/* The ordered member set of the active shards, with shares of the total. */
json_t *app_soup_members(struct app *a, char **err) {
  struct registry_shard *rows = NULL;
  size_t n = 0;
  if (registry_shard_list(a->reg, "active", NULL, &rows, &n, err) != 0) return NULL;
  int64_t K = 0;
  for (size_t i = 0; i < n; i++) K += rows[i].weight_q;
  json_t *m = json_array();
  for (size_t i = 0; i < n; i++)
    json_array_append_new(m, json_pack("{s:I,s:s,s:s,s:f,s:f}", "id", (json_int_t)rows[i].id,
                                       "name", rows[i].name, "sha256", rows[i].sha256, "weight",
                                       soup_weight_value(rows[i].weight_q), "share",
                                       (double)rows[i].weight_q / (double)K));
  registry_shard_rows_free(rows, n);
  return m;
}

json_t *app_soup_brief(struct app *a) {
  const struct soup_version *v = soup_acquire(a->soup);
  char *err = NULL;
  json_t *m = app_soup_members(a, &err);
  free(err);
  json_t *o = json_pack("{s:I,s:s,s:o}", "version", (json_int_t)v->version, "hash", v->hash_hex,
                        "members", m ? m : json_array());
  soup_release(a->soup, v);
  return o;
}

json_t *app_soup_json(struct app *a, int admin) {
  const struct soup_version *v = soup_acquire(a->soup);
  struct soup_stats st;
  soup_stats_get(a->soup, &st);
  struct update_times t;
  app_update_times(a, &t);
  char *err = NULL;
  json_t *m = app_soup_members(a, &err);
  free(err);
  json_t *base = json_pack("{s:s,s:s}", "name", a->base_name, "unet_sha256", a->base_sha256);
  if (admin) json_object_set_new(base, "path", json_string(a->model->unet_weights));
  size_t bytes = 0;
  for (size_t i = 0; i < v->n_tensors; i++) bytes += (size_t)v->tensors[i].numel;
  bytes *= dtype_size(v->dtype);
  json_t *o = json_pack(
      "{s:I,s:s,s:o,s:o,s:s,s:s,s:I,s:I,s:s?,s:f}", "version", (json_int_t)v->version, "hash",
      v->hash_hex, "members", m ? m : json_array(), "base", base, "dtype", dtype_name(v->dtype),
      "device", a->device, "params", (json_int_t)st.params, "bytes", (json_int_t)bytes,
      "updated_at", t.updated_at[0] ? t.updated_at : NULL, "last_update_ms", t.last_update_ms);
  soup_release(a->soup, v);
  return o;
}
