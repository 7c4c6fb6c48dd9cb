/* st_index.c: sharded safetensors weights (see st_open_index in
 * safetensors.h). The index names each tensor's part file; every part is
 * opened with the strict reader, and the merged view's tensors point into
 * the parts' mappings. */
#include "formats/json_file.h"
#include "safetensors.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((format(printf, 3, 4))) static int ix_fail(char **err, int status, const char *fmt,
                                                         ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(err, fmt, ap) < 0) *err = NULL;
    va_end(ap);
  }
  return status;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_tensor(const void *a, const void *b) {
  return strcmp(((const struct st_tensor *)a)->name, ((const struct st_tensor *)b)->name);
}

/* A part's name as the index gives it: a plain file name in the same folder. */
static int part_name_ok(const char *s) {
  size_t n = strlen(s);
  return n > 0 && n < 256 && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..") &&
         n > strlen(".safetensors") && !strcmp(s + n - strlen(".safetensors"), ".safetensors");
}

/* The sorted distinct part names of the weight map (borrowed from the JSON). */
static int part_names(json_t *map, const char ***names, size_t *n, char **err) {
  const char *k;
  json_t *v;
  size_t cap = 0;
  *names = NULL;
  *n = 0;
  json_object_foreach(map, k, v) {
    if (!json_is_string(v) || !part_name_ok(json_string_value(v)))
      return ix_fail(err, ST_E_ENTRY,
                     "weight_map: tensor '%.200s': the part is not a .safetensors file name in the "
                     "index's folder",
                     k);
    const char *p = json_string_value(v);
    size_t i = 0;
    while (i < *n && strcmp((*names)[i], p)) i++;
    if (i < *n) continue;
    if (*n == ST_MAX_PARTS) return ix_fail(err, ST_E_ENTRY, "more than %d parts", ST_MAX_PARTS);
    if (*n == cap) {
      cap = cap ? 2 * cap : 8;
      const char **g = realloc(*names, cap * sizeof *g);
      if (!g) return ix_fail(err, ST_E_NOMEM, "out of memory");
      *names = g;
    }
    (*names)[(*n)++] = p;
  }
  qsort(*names, *n, sizeof **names, cmp_str);
  return 0;
}

/* Every tensor of part p is one the index puts in p. */
static int check_part(const struct st_file *part, const char *p, json_t *map, char **err) {
  for (size_t i = 0; i < part->n_tensors; i++) {
    const char *t = part->tensors[i].name;
    json_t *where = json_object_get(map, t);
    if (!where)
      return ix_fail(err, ST_E_ENTRY, "%s holds tensor '%.200s', which the index does not list", p,
                     t);
    if (strcmp(json_string_value(where), p))
      return ix_fail(err, ST_E_ENTRY, "%s holds tensor '%.200s', which the index puts in %s", p, t,
                     json_string_value(where));
  }
  return 0;
}

/* The weight map's first tensor whose part lacks it (for the message). */
static const char *first_missing(json_t *map, struct st_file *f) {
  const char *k;
  json_t *v;
  json_object_foreach(map, k, v) {
    if (!st_find(f, k)) return k;
  }
  return "?";
}

int st_open_index(const char *index_path, struct st_file **out, char **err) {
  *out = NULL;
  if (err) *err = NULL;
  json_error_t je;
  json_t *root = json_file_load(index_path, JSON_REJECT_DUPLICATES, &je);
  if (!root)
    return ix_fail(err, ST_E_JSON, "the index is not valid JSON: %s (line %d)", je.text, je.line);
  int rc = 0;
  const char **names = NULL;
  size_t n_names = 0, total = 0;
  struct st_file *f = calloc(1, sizeof *f);
  json_t *map = json_object_get(root, "weight_map");
  if (!f) {
    rc = ix_fail(err, ST_E_NOMEM, "out of memory");
    goto done;
  }
  if (!json_is_object(map)) {
    rc = ix_fail(err, ST_E_ENTRY, "the index has no \"weight_map\" object");
    goto done;
  }
  if ((rc = part_names(map, &names, &n_names, err)) < 0) goto done;
  f->parts = calloc(n_names ? n_names : 1, sizeof *f->parts);
  f->part_paths = calloc(n_names ? n_names : 1, sizeof *f->part_paths);
  if (!f->parts || !f->part_paths) {
    rc = ix_fail(err, ST_E_NOMEM, "out of memory");
    goto done;
  }
  const char *slash = strrchr(index_path, '/');
  int dir_len = slash ? (int)(slash - index_path + 1) : 0;
  for (size_t i = 0; i < n_names; i++, f->n_parts++) {
    char *e = NULL;
    if (asprintf(&f->part_paths[i], "%.*s%s", dir_len, index_path, names[i]) < 0) {
      f->part_paths[i] = NULL;
      rc = ix_fail(err, ST_E_NOMEM, "out of memory");
      goto done;
    }
    if ((rc = st_open(f->part_paths[i], &f->parts[i], &e)) < 0) {
      ix_fail(err, rc, "%s: %s", names[i], e ? e : "unreadable");
      free(e);
      free(f->part_paths[i]);
      goto done;
    }
    if ((rc = check_part(f->parts[i], names[i], map, err)) < 0) {
      f->n_parts++;
      goto done;
    }
    total += f->parts[i]->n_tensors;
  }
  if (!(f->tensors = calloc(total ? total : 1, sizeof *f->tensors))) {
    rc = ix_fail(err, ST_E_NOMEM, "out of memory");
    goto done;
  }
  for (size_t i = 0; i < f->n_parts; i++)
    for (size_t j = 0; j < f->parts[i]->n_tensors; j++) {
      struct st_tensor *t = &f->tensors[f->n_tensors];
      *t = f->parts[i]->tensors[j];
      if (!(t->name = strdup(t->name))) {
        rc = ix_fail(err, ST_E_NOMEM, "out of memory");
        goto done;
      }
      f->n_tensors++;
    }
  qsort(f->tensors, f->n_tensors, sizeof *f->tensors, cmp_tensor);
  /* each part holds only its own tensors, so no name repeats; the counts
   * agree only if every listed tensor was found */
  if (f->n_tensors != json_object_size(map)) {
    rc = ix_fail(err, ST_E_ENTRY, "tensor '%.200s' is listed in the index but missing from %s",
                 first_missing(map, f),
                 json_string_value(json_object_get(map, first_missing(map, f))));
    goto done;
  }
done:
  free(names);
  json_decref(root);
  if (rc < 0) {
    st_close(f);
    return rc;
  }
  *out = f;
  return 0;
}

int st_open_weights(const char *path, struct st_file **out, char **err) {
  size_t n = strlen(path);
  if (n >= 5 && !strcmp(path + n - 5, ".json")) return st_open_index(path, out, err);
  return st_open(path, out, err);
}
