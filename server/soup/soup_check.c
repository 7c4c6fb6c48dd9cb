/* soup_check.c: shard validation, run before any change to the accumulator.
 *
 * Structure (soup_match): exactly the base's tensor names, equal shapes,
 * dtype F32/F16/BF16. Values (soup_validate_values): finite and
 * |w| * 2^F <= 2^36 + 1/2, i.e. |w| <= 2^(e+6) for the base exponent e
 * (soup.h). Errors are {"field": tensor name, "message": ...} for a 422.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "soup_internal.h"

static void add_error(json_t *errors, int max_errors, char **err, const char *field,
                      char *msg /* taken */) {
  if (!msg) return;
  if (errors && json_is_array(errors) && (int)json_array_size(errors) < max_errors)
    json_array_append_new(errors, json_pack("{s:s, s:s}", "field", field, "message", msg));
  if (err && !*err) *err = soup_strdupf("%s: %s", field, msg);
  free(msg);
}

static int cmp_idx_name(const void *a, const void *b, void *ctx) {
  const struct soup_view *v = ctx;
  return strcmp(v[*(const size_t *)a].name, v[*(const size_t *)b].name);
}

static char *shape_str(int ndim, const int64_t *shape) {
  char buf[256];
  size_t o = 0;
  o += (size_t)snprintf(buf + o, sizeof buf - o, "[");
  for (int d = 0; d < ndim && o < sizeof buf - 32; d++)
    o += (size_t)snprintf(buf + o, sizeof buf - o, d ? ", %lld" : "%lld", (long long)shape[d]);
  snprintf(buf + o, sizeof buf - o, "]");
  return strdup(buf);
}

int soup_match(const struct soup *s, const struct soup_view *v, size_t n, size_t *map,
               json_t *errors, int max_errors, char **err) {
  int bad = 0;
  size_t *idx = malloc((n ? n : 1) * sizeof *idx);
  if (!idx) {
    if (err && !*err) *err = soup_strdupf("out of memory");
    return -1;
  }
  for (size_t i = 0; i < n; i++) idx[i] = i;
  qsort_r(idx, n, sizeof *idx, cmp_idx_name, (void *)v);
  size_t a = 0, b = 0;
  while (a < s->n || b < n) {
    int c = a >= s->n ? 1 : b >= n ? -1 : strcmp(s->t[a].name, v[idx[b]].name);
    if (c < 0) {
      add_error(errors, max_errors, err, s->t[a].name, soup_strdupf("missing from the shard"));
      bad = 1;
      a++;
    } else if (c > 0) {
      add_error(errors, max_errors, err, v[idx[b]].name,
                soup_strdupf("not a tensor of the base UNet"));
      bad = 1;
      b++;
    } else {
      const struct soup_view *x = &v[idx[b]];
      const struct soup_meta *m = &s->t[a];
      if (b + 1 < n && strcmp(x->name, v[idx[b + 1]].name) == 0) {
        add_error(errors, max_errors, err, x->name, soup_strdupf("duplicate tensor"));
        bad = 1;
        while (b + 1 < n && strcmp(x->name, v[idx[b + 1]].name) == 0) b++;
      }
      int same = x->ndim == m->ndim;
      for (int d = 0; same && d < m->ndim; d++) same = x->shape[d] == m->shape[d];
      if (!same) {
        char *xs = shape_str(x->ndim, x->shape), *ms = shape_str(m->ndim, m->shape);
        add_error(
            errors, max_errors, err, x->name,
            soup_strdupf("shape %s differs from the base's %s", xs ? xs : "?", ms ? ms : "?"));
        free(xs);
        free(ms);
        bad = 1;
      } else if (soup_st_to_dtype(x->dtype) < 0) {
        add_error(errors, max_errors, err, x->name,
                  soup_strdupf("dtype %s (F32, F16 or BF16 needed)", st_dtype_name(x->dtype)));
        bad = 1;
      } else if (!x->data && m->numel > 0) {
        add_error(errors, max_errors, err, x->name, soup_strdupf("no data"));
        bad = 1;
      }
      map[a] = idx[b];
      a++;
      b++;
    }
  }
  free(idx);
  return bad ? -1 : 0;
}

struct vctx {
  const struct soup *s;
  const struct soup_view *v;
  const size_t *map;
  int64_t *bad; /* [n] first bad index or -1 */
};

static int validate_one(void *ctx, size_t i) {
  struct vctx *c = ctx;
  const struct soup_view *x = &c->v[c->map[i]];
  int64_t b = -1;
  if (c->s->be->validate(x->data, (enum dtype)soup_st_to_dtype(x->dtype), c->s->t[i].numel,
                         c->s->t[i].F, &b))
    c->bad[i] = b;
  return 0;
}

static double view_value(const struct soup_view *x, int64_t i) {
  if (x->dtype == ST_F32) return soup_load_f32(x->data, i);
  if (x->dtype == ST_F16) return f16_to_f32(soup_load_u16(x->data, i));
  return bf16_to_f32(soup_load_u16(x->data, i));
}

int soup_validate_values(const struct soup *s, const struct soup_view *v, const size_t *map,
                         json_t *errors, int max_errors, char **err) {
  struct vctx c = {.s = s, .v = v, .map = map, .bad = malloc(s->n * sizeof(int64_t))};
  if (!c.bad) {
    if (err && !*err) *err = soup_strdupf("out of memory");
    return -1;
  }
  for (size_t i = 0; i < s->n; i++) c.bad[i] = -1;
  soup_par_for(s, validate_one, &c);
  int bad = 0;
  for (size_t i = 0; i < s->n; i++) {
    if (c.bad[i] < 0) continue;
    bad = 1;
    double x = view_value(&v[map[i]], c.bad[i]);
    if (!isfinite(x))
      add_error(errors, max_errors, err, s->t[i].name,
                soup_strdupf("value %g at index %lld is not finite", x, (long long)c.bad[i]));
    else
      add_error(errors, max_errors, err, s->t[i].name,
                soup_strdupf("value %g at index %lld is outside the supported range |w| <= %g "
                             "(64 times the base tensor's largest magnitude)",
                             x, (long long)c.bad[i], ldexp(1.0, SOUP_Q_LIMIT_BITS - s->t[i].F)));
  }
  free(c.bad);
  return bad ? -1 : 0;
}

int soup_check_shard(const struct soup *s, const struct soup_view *v, size_t n, json_t *errors,
                     int max_errors) {
  size_t *map = malloc(s->n * sizeof *map);
  int rc = -1;
  if (!map) return -1;
  if (soup_match(s, v, n, map, errors, max_errors, NULL) == 0 &&
      soup_validate_values(s, v, map, errors, max_errors, NULL) == 0)
    rc = 0;
  free(map);
  return rc;
}

int soup_check_shard_st(const struct soup *s, const struct st_file *f, json_t *errors,
                        int max_errors) {
  struct soup_view *v = NULL;
  size_t n = 0;
  char *err = NULL;
  if (soup_views_from_st(f, &v, &n, &err)) {
    free(err);
    return -1;
  }
  int rc = soup_check_shard(s, v, n, errors, max_errors);
  free(v);
  return rc;
}
