/* routes.c: the route table and the matcher. */
#include "routes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"

static const struct route routes[] = {
    {.method = "GET", .pattern = "/healthz", .min_role = ROLE_NONE, .fn = api_healthz},
    {.method = "GET", .pattern = "/readyz", .min_role = ROLE_NONE, .fn = api_readyz},
    {.method = "GET", .pattern = "/version", .min_role = ROLE_NONE, .fn = api_version},
    {.method = "POST",
     .pattern = "/shards",
     .min_role = ROLE_PROVIDER,
     .body = BODY_JSON_OR_UPLOAD,
     .fn = api_shards_create},
    {.method = "GET", .pattern = "/shards", .min_role = ROLE_CLIENT, .fn = api_shards_list},
    {.method = "GET", .pattern = "/shards/{id}", .min_role = ROLE_CLIENT, .fn = api_shards_get},
    {.method = "GET",
     .pattern = "/shards/{id}/receipts",
     .min_role = ROLE_CLIENT,
     .fn = api_shard_receipts},
    {.method = "GET", .pattern = "/keys", .min_role = ROLE_NONE, .fn = api_keys_list},
    {.method = "PATCH",
     .pattern = "/shards/{id}",
     .min_role = ROLE_PROVIDER,
     .body = BODY_JSON,
     .fn = api_shards_patch},
    {.method = "POST",
     .pattern = "/shards/{id}/withdraw",
     .min_role = ROLE_PROVIDER,
     .body = BODY_JSON,
     .fn = api_shards_withdraw},
    {.method = "GET", .pattern = "/soup", .min_role = ROLE_CLIENT, .fn = api_soup_get},
    {.method = "GET", .pattern = "/soup/history", .min_role = ROLE_CLIENT, .fn = api_soup_history},
    {.method = "POST",
     .pattern = "/soup/verify",
     .min_role = ROLE_ADMIN,
     .body = BODY_JSON,
     .fn = api_soup_verify},
    {.method = "GET", .pattern = "/soup/export", .min_role = ROLE_ADMIN, .fn = api_soup_export},
    {.method = "GET", .pattern = "/events", .min_role = ROLE_CLIENT, .fn = api_events_list},
    {.method = "GET",
     .pattern = "/events/verify",
     .min_role = ROLE_CLIENT,
     .fn = api_events_verify},
    {.method = "POST",
     .pattern = "/generate",
     .min_role = ROLE_CLIENT,
     .body = BODY_JSON,
     .fn = api_generate},
    {.method = "GET", .pattern = "/jobs/{key}", .min_role = ROLE_CLIENT, .fn = api_jobs_get},
    {.method = "DELETE", .pattern = "/jobs/{key}", .min_role = ROLE_CLIENT, .fn = api_jobs_cancel},
    {.method = "POST",
     .pattern = "/v1/images/generations",
     .min_role = ROLE_CLIENT,
     .body = BODY_JSON,
     .fn = api_openai_images},
    {.method = "POST",
     .pattern = "/images/generations",
     .min_role = ROLE_CLIENT,
     .body = BODY_JSON,
     .fn = api_openai_images},
    {.method = "GET", .pattern = "/v1/models", .min_role = ROLE_CLIENT, .fn = api_openai_models},
    {.method = "POST",
     .pattern = "/sdapi/v1/txt2img",
     .min_role = ROLE_CLIENT,
     .body = BODY_JSON,
     .fn = api_sdapi_txt2img},
    {.method = "GET",
     .pattern = "/sdapi/v1/scripts",
     .min_role = ROLE_CLIENT,
     .fn = api_sdapi_scripts},
    {.method = "GET",
     .pattern = "/sdapi/v1/samplers",
     .min_role = ROLE_CLIENT,
     .fn = api_sdapi_samplers},
    {.method = "GET",
     .pattern = "/sdapi/v1/sd-models",
     .min_role = ROLE_CLIENT,
     .fn = api_sdapi_models},
    {.method = "GET",
     .pattern = "/sdapi/v1/options",
     .min_role = ROLE_CLIENT,
     .fn = api_sdapi_options},
    {.method = "GET", .pattern = "/stats", .min_role = ROLE_CLIENT, .fn = api_stats},
    {.method = "GET", .pattern = "/metrics", .min_role = ROLE_CLIENT, .fn = api_metrics},
    {.method = "GET", .pattern = "/", .min_role = ROLE_NONE, .fn = api_dashboard},
};

static int parse_id(const char *s, size_t n, int64_t *out) {
  if (n == 0 || n > 18) return 0;
  int64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return 0;
    v = v * 10 + (s[i] - '0');
  }
  if (v <= 0) return 0;
  *out = v;
  return 1;
}

static int parse_key(const char *s, size_t n, char *out) {
  if (n == 0 || n >= 40) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'z') ||
          (s[i] >= 'A' && s[i] <= 'Z') || s[i] == '_' || s[i] == '-'))
      return 0;
  memcpy(out, s, n);
  out[n] = 0;
  return 1;
}

/* Segment-wise match of path against pattern ({id}: a positive integer,
 * {key}: up to 39 of [A-Za-z0-9_-]). */
static int match(const char *pattern, const char *path, int64_t *id, char *key) {
  const char *p = pattern, *q = path;
  while (*p && *q) {
    if (*p != '/' || *q != '/') return 0;
    p++, q++;
    const char *pe = strchrnul(p, '/'), *qe = strchrnul(q, '/');
    size_t pl = (size_t)(pe - p), ql = (size_t)(qe - q);
    if (pl == 4 && memcmp(p, "{id}", 4) == 0) {
      if (!parse_id(q, ql, id)) return 0;
    } else if (pl == 5 && memcmp(p, "{key}", 5) == 0) {
      if (!parse_key(q, ql, key)) return 0;
    } else if (pl != ql || memcmp(p, q, pl) != 0) {
      return 0;
    }
    p = pe, q = qe;
  }
  return *p == 0 && (*q == 0 || (q[0] == '/' && q[1] == 0));
}

const struct route *route_match(const char *method, const char *path, int64_t *id, char *key,
                                int *path_known, char *allow, size_t allow_len) {
  *path_known = 0;
  allow[0] = 0;
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    int64_t v = 0;
    if (!match(routes[i].pattern, path, &v, key)) continue;
    if (strcmp(routes[i].method, method) == 0) {
      *id = v;
      return &routes[i];
    }
    *path_known = 1;
    size_t n = strlen(allow);
    snprintf(allow + n, allow_len - n, "%s%s", n ? ", " : "", routes[i].method);
  }
  return NULL;
}
