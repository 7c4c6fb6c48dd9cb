/* safetensors.c: the strict safetensors reader, the shard compatibility check
 * and the writer.
 *
 * The reader performs every check of the reference implementation
 * (huggingface/safetensors tensor.rs), in its order: at least 8 bytes; N at
 * most ST_MAX_HEADER_SIZE; 8 + N inside the buffer; the header UTF-8, starting
 * with '{', a JSON object without duplicate keys; each entry exactly
 * {dtype, shape, data_offsets} with a known dtype, non-negative integer dims
 * and 0 <= BEGIN <= END; __metadata__ a string -> string object; sorted by
 * offset, the tensors tile the data buffer from 0 (no gap, no overlap);
 * numel and byte size computed with checked multiplication and equal to
 * END - BEGIN; the last END is the end of the file.
 * Nothing is allocated from the claimed N before N is checked against the
 * real buffer, so memory follows the real file size, never a claimed one.
 * Error messages name the tensor (cut to ~120 bytes, control characters
 * replaced), are valid UTF-8 and never contain a server path.
 * Stricter than the reference (python safetensors 0.8 accepts these): a
 * header starting with whitespace (its pending InvalidHeaderStart check), an
 * entry with extra fields, rank above ST_MAX_DIMS, integers above INT64_MAX.
 * st_open maps the file MAP_PRIVATE: the file must not be truncated while
 * mapped (SIGBUS), so callers map files they own (the shard store).
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
  const char *name;
  size_t size;
} st_dtypes[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1},       [ST_U8] = {"U8", 1},           [ST_I8] = {"I8", 1},
    [ST_F8_E5M2] = {"F8_E5M2", 1}, [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_I16] = {"I16", 2},
    [ST_U16] = {"U16", 2},         [ST_F16] = {"F16", 2},         [ST_BF16] = {"BF16", 2},
    [ST_I32] = {"I32", 4},         [ST_U32] = {"U32", 4},         [ST_F32] = {"F32", 4},
    [ST_F64] = {"F64", 8},         [ST_I64] = {"I64", 8},         [ST_U64] = {"U64", 8},
};

size_t st_dtype_size(enum st_dtype dt) {
  return (unsigned)dt < ST_DTYPE_COUNT ? st_dtypes[dt].size : 0;
}

const char *st_dtype_name(enum st_dtype dt) {
  return (unsigned)dt < ST_DTYPE_COUNT ? st_dtypes[dt].name : "?";
}

static int st_dtype_parse(const char *name) {
  for (int i = 0; i < ST_DTYPE_COUNT; i++)
    if (strcmp(name, st_dtypes[i].name) == 0) return i;
  return -1;
}

int st_dtype_to_dtype(enum st_dtype dt) {
  switch (dt) {
  case ST_F32:
    return DT_F32;
  case ST_F16:
    return DT_F16;
  case ST_BF16:
    return DT_BF16;
  case ST_I32:
    return DT_I32;
  case ST_I64:
    return DT_I64;
  default:
    return -1;
  }
}

/* Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF). Returns the
 * offset of the first invalid byte, or len if valid. */
static size_t st_utf8_check(const uint8_t *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    uint8_t c = s[i];
    size_t n;
    uint32_t cp, min;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      n = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      n = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return i;
    }
    if (len - i < n) return i;
    for (size_t k = 1; k < n; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += n;
  }
  return len;
}

/* Sets *err to a formatted message (if err) and returns status. */
__attribute__((format(printf, 3, 4))) static int st_fail(char **err, int status, const char *fmt,
                                                         ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(err, fmt, ap) < 0) *err = NULL;
    va_end(ap);
    /* parser messages quote header text: keep them valid UTF-8 for JSON */
    if (*err) (*err)[st_utf8_check((const uint8_t *)*err, strlen(*err))] = 0;
  }
  return status;
}

/* A tensor name fit for an error message: at most ~120 bytes cut at a UTF-8
 * boundary, control characters replaced, "..." when shortened. */
struct st_qname {
  char s[160];
};

static struct st_qname st_qname(const char *name) {
  struct st_qname q;
  size_t i = 0, o = 0;
  while (name[i] && o < 120) {
    unsigned char c = (unsigned char)name[i];
    size_t n = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
    if (o + n > 120) break;
    for (size_t k = 0; k < n && name[i]; k++, i++) {
      unsigned char b = (unsigned char)name[i];
      q.s[o++] = (b < 0x20 || b == 0x7f) ? '?' : (char)b;
    }
  }
  if (name[i]) {
    memcpy(q.s + o, "...", 3);
    o += 3;
  }
  q.s[o] = 0;
  return q;
}
#define QN(name) (st_qname(name).s)

/* "[a, b, c]" into buf. */
static const char *st_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
  size_t o = 0;
  o += (size_t)snprintf(buf + o, cap - o, "[");
  for (int i = 0; i < ndim && o < cap; i++)
    o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (o < cap) snprintf(buf + o, cap - o, "]");
  return buf;
}

void st_close(struct st_file *f) {
  if (!f) return;
  for (size_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
  free(f->tensors);
  json_decref(f->metadata);
  if (f->mapped && f->base && f->size) munmap((void *)f->base, f->size);
  for (size_t i = 0; i < f->n_parts; i++) {
    st_close(f->parts[i]);
    free(f->part_paths[i]);
  }
  free(f->parts);
  free(f->part_paths);
  free(f);
}

/* Fills t from one header entry {dtype, shape, data_offsets}. */
static int st_entry_parse(const char *name, json_t *v, struct st_tensor *t, char **err) {
  if (!json_is_object(v))
    return st_fail(err, ST_E_ENTRY, "tensor '%s': entry is not a JSON object", QN(name));
  json_t *jd = json_object_get(v, "dtype");
  json_t *js = json_object_get(v, "shape");
  json_t *jo = json_object_get(v, "data_offsets");
  if (!jd || !js || !jo)
    return st_fail(err, ST_E_ENTRY, "tensor '%s': missing field '%s'", QN(name),
                   !jd   ? "dtype"
                   : !js ? "shape"
                         : "data_offsets");
  if (json_object_size(v) != 3) {
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
      if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
        return st_fail(err, ST_E_ENTRY, "tensor '%s': unknown field '%s'", QN(name), QN(k));
    }
  }
  if (!json_is_string(jd))
    return st_fail(err, ST_E_ENTRY, "tensor '%s': dtype is not a string", QN(name));
  int dt = st_dtype_parse(json_string_value(jd));
  if (dt < 0)
    return st_fail(err, ST_E_ENTRY, "tensor '%s': unknown dtype '%s'", QN(name),
                   QN(json_string_value(jd)));
  t->dtype = (enum st_dtype)dt;
  if (!json_is_array(js))
    return st_fail(err, ST_E_ENTRY, "tensor '%s': shape is not an array", QN(name));
  if (json_array_size(js) > ST_MAX_DIMS)
    return st_fail(err, ST_E_ENTRY, "tensor '%s': shape has %zu dimensions, at most %d allowed",
                   QN(name), json_array_size(js), ST_MAX_DIMS);
  t->ndim = (int)json_array_size(js);
  for (int i = 0; i < t->ndim; i++) {
    json_t *d = json_array_get(js, (size_t)i);
    if (!json_is_integer(d) || json_integer_value(d) < 0)
      return st_fail(err, ST_E_ENTRY,
                     "tensor '%s': shape dimension %d is not a non-negative integer", QN(name), i);
    t->shape[i] = (int64_t)json_integer_value(d);
  }
  if (!json_is_array(jo) || json_array_size(jo) != 2)
    return st_fail(err, ST_E_ENTRY, "tensor '%s': data_offsets is not an array [BEGIN, END]",
                   QN(name));
  json_t *b = json_array_get(jo, 0), *e = json_array_get(jo, 1);
  if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
      json_integer_value(e) < 0)
    return st_fail(err, ST_E_ENTRY, "tensor '%s': data_offsets are not non-negative integers",
                   QN(name));
  t->begin = (uint64_t)json_integer_value(b);
  t->end = (uint64_t)json_integer_value(e);
  return 0;
}

static int st_metadata_parse(json_t *v, char **err) {
  if (!json_is_object(v)) return st_fail(err, ST_E_ENTRY, "__metadata__ is not a JSON object");
  const char *k;
  json_t *x;
  json_object_foreach(v, k, x) {
    if (!json_is_string(x))
      return st_fail(err, ST_E_ENTRY, "__metadata__ value of '%s' is not a string", QN(k));
  }
  return 0;
}

static int st_cmp_offsets(const void *a, const void *b) {
  const struct st_tensor *x = *(struct st_tensor *const *)a, *y = *(struct st_tensor *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return strcmp(x->name, y->name);
}

static int st_cmp_names(const void *a, const void *b) {
  return strcmp(((const struct st_tensor *)a)->name, ((const struct st_tensor *)b)->name);
}

/* Sorted by offset: tiling from 0, END >= BEGIN, checked numel and bytes,
 * END - BEGIN == bytes. Returns the data buffer length in *data_end. */
static int st_validate(struct st_file *f, uint64_t *data_end, char **err) {
  int rc = 0;
  struct st_tensor **order = NULL;
  if (f->n_tensors) {
    order = malloc(f->n_tensors * sizeof *order);
    if (!order) return st_fail(err, ST_E_NOMEM, "out of memory");
  }
  for (size_t i = 0; i < f->n_tensors; i++) order[i] = &f->tensors[i];
  if (f->n_tensors) qsort(order, f->n_tensors, sizeof *order, st_cmp_offsets);
  uint64_t pos = 0;
  for (size_t i = 0; i < f->n_tensors; i++) {
    struct st_tensor *t = order[i];
    if (t->end < t->begin) {
      rc = st_fail(err, ST_E_OFFSET, "tensor '%s': data_offsets begin %llu > end %llu", QN(t->name),
                   (unsigned long long)t->begin, (unsigned long long)t->end);
      goto done;
    }
    if (t->begin != pos) {
      rc = st_fail(err, ST_E_OFFSET,
                   "tensor '%s': data_offsets begin at %llu but the previous tensor ends at %llu "
                   "(%s)",
                   QN(t->name), (unsigned long long)t->begin, (unsigned long long)pos,
                   t->begin > pos ? "gap" : "overlap");
      goto done;
    }
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
      if (__builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel)) {
        rc = st_fail(err, ST_E_OVERFLOW, "tensor '%s': element count of the shape overflows",
                     QN(t->name));
        goto done;
      }
    }
    uint64_t bytes;
    if (__builtin_mul_overflow(numel, (uint64_t)st_dtype_size(t->dtype), &bytes)) {
      rc =
          st_fail(err, ST_E_OVERFLOW, "tensor '%s': byte size of the shape overflows", QN(t->name));
      goto done;
    }
    if (t->end - t->begin != bytes) {
      char sh[ST_MAX_DIMS * 22 + 4];
      rc = st_fail(err, ST_E_SPAN,
                   "tensor '%s': data_offsets span %llu bytes but shape %s of %s needs %llu",
                   QN(t->name), (unsigned long long)(t->end - t->begin),
                   st_shape_str(sh, sizeof sh, t->ndim, t->shape), st_dtype_name(t->dtype),
                   (unsigned long long)bytes);
      goto done;
    }
    t->numel = numel;
    pos = t->end;
  }
  *data_end = pos;
done:
  free(order);
  return rc;
}

int st_parse(const uint8_t *buf, size_t len, struct st_file **out, char **err) {
  return st_parse_limit(buf, len, ST_MAX_HEADER_SIZE, out, err);
}

int st_parse_limit(const uint8_t *buf, size_t len, uint64_t max_header, struct st_file **out,
                   char **err) {
  int rc = 0;
  json_t *root = NULL;
  struct st_file *f = NULL;
  *out = NULL;
  if (err) *err = NULL;

  if (len < 8) {
    rc = st_fail(err, ST_E_TOO_SMALL, "file is %zu bytes, shorter than the 8-byte header length",
                 len);
    goto fail;
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | buf[i];
  if (max_header == 0 || max_header > ST_MAX_HEADER_SIZE) max_header = ST_MAX_HEADER_SIZE;
  if (n > max_header) {
    rc = st_fail(err, ST_E_HEADER_SIZE, "header length %llu exceeds the limit of %llu bytes",
                 (unsigned long long)n, (unsigned long long)max_header);
    goto fail;
  }
  uint64_t stop;
  if (__builtin_add_overflow(n, (uint64_t)8, &stop) || stop > (uint64_t)len) {
    rc = st_fail(err, ST_E_HEADER_LEN, "header length %llu runs past the end of the %zu-byte file",
                 (unsigned long long)n, len);
    goto fail;
  }
  const uint8_t *hdr = buf + 8;
  size_t bad = st_utf8_check(hdr, (size_t)n);
  if (bad != (size_t)n) {
    rc = st_fail(err, ST_E_UTF8, "header is not valid UTF-8 (byte %zu)", bad);
    goto fail;
  }
  if (n == 0 || hdr[0] != '{') {
    rc = st_fail(err, ST_E_JSON, "header does not start with '{'");
    goto fail;
  }
  json_error_t jerr;
  root = json_loadb((const char *)hdr, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) {
    rc =
        st_fail(err, ST_E_JSON, "header is not valid JSON: %s (column %d)", jerr.text, jerr.column);
    goto fail;
  }
  if (!json_is_object(root)) {
    rc = st_fail(err, ST_E_JSON, "header is not a JSON object");
    goto fail;
  }

  f = calloc(1, sizeof *f);
  size_t cap = json_object_size(root);
  if (!f || (cap && !(f->tensors = calloc(cap, sizeof *f->tensors)))) {
    rc = st_fail(err, ST_E_NOMEM, "out of memory");
    goto fail;
  }
  f->base = buf;
  f->size = len;
  f->header_len = n;
  const char *key;
  json_t *val;
  json_object_foreach(root, key, val) {
    if (strcmp(key, "__metadata__") == 0) {
      if ((rc = st_metadata_parse(val, err)) < 0) goto fail;
      f->metadata = json_incref(val);
      continue;
    }
    struct st_tensor *t = &f->tensors[f->n_tensors];
    if ((rc = st_entry_parse(key, val, t, err)) < 0) goto fail;
    if (!(t->name = strdup(key))) {
      rc = st_fail(err, ST_E_NOMEM, "out of memory");
      goto fail;
    }
    f->n_tensors++;
  }

  uint64_t data_end = 0;
  if ((rc = st_validate(f, &data_end, err)) < 0) goto fail;
  uint64_t data_len = (uint64_t)len - stop;
  if (data_end != data_len) {
    if (data_end > data_len)
      rc = st_fail(err, ST_E_INCOMPLETE,
                   "tensor data ends at byte %llu of the data buffer but the file holds only %llu "
                   "bytes after the header",
                   (unsigned long long)data_end, (unsigned long long)data_len);
    else
      rc = st_fail(err, ST_E_INCOMPLETE, "%llu trailing bytes after the last tensor",
                   (unsigned long long)(data_len - data_end));
    goto fail;
  }
  for (size_t i = 0; i < f->n_tensors; i++) f->tensors[i].data = buf + stop + f->tensors[i].begin;
  if (f->n_tensors) qsort(f->tensors, f->n_tensors, sizeof *f->tensors, st_cmp_names);
  json_decref(root);
  *out = f;
  return 0;

fail:
  json_decref(root);
  st_close(f);
  return rc;
}

int st_open(const char *path, struct st_file **out, char **err) {
  return st_open_limit(path, ST_MAX_HEADER_SIZE, out, err);
}

int st_open_limit(const char *path, uint64_t max_header, struct st_file **out, char **err) {
  static const uint8_t empty[1];
  *out = NULL;
  if (err) *err = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return st_fail(err, ST_E_IO, "cannot open the safetensors file: %s", strerror(errno));
  struct stat st;
  if (fstat(fd, &st) < 0) {
    int e = errno;
    close(fd);
    return st_fail(err, ST_E_IO, "cannot stat the safetensors file: %s", strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return st_fail(err, ST_E_IO, "the safetensors path is not a regular file");
  }
  size_t size = (size_t)st.st_size;
  if (size == 0) {
    close(fd);
    return st_parse_limit(empty, 0, max_header, out, err);
  }
  void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  close(fd);
  if (map == MAP_FAILED)
    return st_fail(err, ST_E_IO, "cannot map the safetensors file: %s", strerror(e));
  int rc = st_parse_limit(map, size, max_header, out, err);
  if (rc < 0) {
    munmap(map, size);
    return rc;
  }
  (*out)->mapped = 1;
  return 0;
}

const struct st_tensor *st_find(const struct st_file *f, const char *name) {
  size_t lo = 0, hi = f->n_tensors;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(f->tensors[mid].name, name);
    if (c == 0) return &f->tensors[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

/* ---- compatibility of a shard with the base UNet ---- */

static void st_compat_add(json_t *errors, int *count, int max, const char *name, const char *fmt,
                          ...) __attribute__((format(printf, 5, 6)));
static void st_compat_add(json_t *errors, int *count, int max, const char *name, const char *fmt,
                          ...) {
  if (errors && *count < max) {
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0) msg = NULL;
    va_end(ap);
    json_t *o = json_object();
    if (o && msg) {
      json_object_set_new(o, "field", json_string(QN(name)));
      json_object_set_new(o, "message", json_string(msg));
      json_array_append_new(errors, o);
    } else {
      json_decref(o);
    }
    free(msg);
  }
  (*count)++;
}

int st_check_compatible(const struct st_file *base, const struct st_file *shard, json_t *errors,
                        int max_errors) {
  int count = 0;
  size_t i = 0, j = 0;
  char s1[ST_MAX_DIMS * 22 + 4], s2[ST_MAX_DIMS * 22 + 4];
  /* both are sorted by name: one merge walk */
  while (i < base->n_tensors || j < shard->n_tensors) {
    const struct st_tensor *b = i < base->n_tensors ? &base->tensors[i] : NULL;
    const struct st_tensor *s = j < shard->n_tensors ? &shard->tensors[j] : NULL;
    int c = !b ? 1 : !s ? -1 : strcmp(b->name, s->name);
    if (c < 0) {
      st_compat_add(errors, &count, max_errors, b->name, "tensor missing from the shard");
      i++;
    } else if (c > 0) {
      st_compat_add(errors, &count, max_errors, s->name, "tensor not in the base UNet");
      j++;
    } else {
      int same = b->ndim == s->ndim;
      for (int d = 0; same && d < b->ndim; d++) same = b->shape[d] == s->shape[d];
      if (!same)
        st_compat_add(errors, &count, max_errors, s->name,
                      "shape %s does not match the base UNet shape %s",
                      st_shape_str(s1, sizeof s1, s->ndim, s->shape),
                      st_shape_str(s2, sizeof s2, b->ndim, b->shape));
      if (s->dtype != ST_F32 && s->dtype != ST_F16 && s->dtype != ST_BF16)
        st_compat_add(errors, &count, max_errors, s->name,
                      "dtype %s is not allowed (F32, F16 or BF16 only)", st_dtype_name(s->dtype));
      i++;
      j++;
    }
  }
  return count ? -1 : 0;
}

/* ---- non-finite values ---- */

/* Index of the first element whose exponent bits are all ones (NaN or Inf),
 * or numel if none. Works on the raw bits: no conversion, any alignment. */
static uint64_t st_first_nonfinite(const struct st_tensor *t) {
  const uint8_t *p = t->data;
  if (t->dtype == ST_F32) {
    for (uint64_t i = 0; i < t->numel; i++) {
      uint32_t u;
      memcpy(&u, p + 4 * i, 4);
      if ((u & 0x7f800000u) == 0x7f800000u) return i;
    }
  } else {
    uint16_t mask = t->dtype == ST_F16 ? 0x7c00 : 0x7f80;
    for (uint64_t i = 0; i < t->numel; i++) {
      uint16_t u;
      memcpy(&u, p + 2 * i, 2);
      if ((u & mask) == mask) return i;
    }
  }
  return t->numel;
}

int st_check_finite(const struct st_file *f, json_t *errors, int max_errors) {
  int count = 0;
  for (size_t i = 0; i < f->n_tensors; i++) {
    const struct st_tensor *t = &f->tensors[i];
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16) continue;
    uint64_t k = st_first_nonfinite(t);
    if (k < t->numel)
      st_compat_add(errors, &count, max_errors, t->name, "element %llu is NaN or infinite",
                    (unsigned long long)k);
  }
  return count ? -1 : 0;
}

/* ---- writer ---- */

/* Builds the padded header; returns its length in *hlen (multiple of 8). */
static int st_header_build(const struct st_write_tensor *t, size_t n, const json_t *metadata,
                           char **hdr, size_t *hlen, char **err) {
  int rc = 0;
  char *dump = NULL;
  json_t *root = json_object();
  if (!root) return st_fail(err, ST_E_NOMEM, "out of memory");
  if (metadata) {
    const char *k;
    json_t *x;
    if (!json_is_object(metadata)) {
      rc = st_fail(err, ST_E_ARG, "metadata is not a JSON object");
      goto done;
    }
    json_object_foreach((json_t *)metadata, k, x) {
      if (!json_is_string(x)) {
        rc = st_fail(err, ST_E_ARG, "metadata value of '%s' is not a string", QN(k));
        goto done;
      }
    }
    if (json_object_set(root, "__metadata__", (json_t *)metadata) < 0) {
      rc = st_fail(err, ST_E_NOMEM, "out of memory");
      goto done;
    }
  }
  uint64_t off = 0;
  for (size_t i = 0; i < n; i++) {
    const char *name = t[i].name;
    if (!name || strcmp(name, "__metadata__") == 0) {
      rc = st_fail(err, ST_E_ARG, "tensor %zu: invalid name", i);
      goto done;
    }
    if (json_object_get(root, name)) {
      rc = st_fail(err, ST_E_ARG, "tensor '%s': duplicate name", QN(name));
      goto done;
    }
    if ((unsigned)t[i].dtype >= ST_DTYPE_COUNT || t[i].ndim < 0 || t[i].ndim > ST_MAX_DIMS ||
        (t[i].ndim && !t[i].shape)) {
      rc = st_fail(err, ST_E_ARG, "tensor '%s': invalid dtype or rank", QN(name));
      goto done;
    }
    uint64_t bytes = st_dtype_size(t[i].dtype);
    json_t *shape = json_array();
    for (int d = 0; d < t[i].ndim; d++) {
      if (t[i].shape[d] < 0 || __builtin_mul_overflow(bytes, (uint64_t)t[i].shape[d], &bytes)) {
        json_decref(shape);
        rc = st_fail(err, ST_E_ARG, "tensor '%s': invalid shape", QN(name));
        goto done;
      }
      json_array_append_new(shape, json_integer(t[i].shape[d]));
    }
    uint64_t end;
    if (__builtin_add_overflow(off, bytes, &end) || end > (uint64_t)INT64_MAX ||
        (bytes && !t[i].data)) {
      json_decref(shape);
      rc = st_fail(err, ST_E_ARG, "tensor '%s': invalid size or data", QN(name));
      goto done;
    }
    json_t *e = json_pack("{s:s, s:o, s:[I, I]}", "dtype", st_dtype_name(t[i].dtype), "shape",
                          shape, "data_offsets", (json_int_t)off, (json_int_t)end);
    if (!e) {
      rc = st_fail(err, ST_E_NOMEM, "out of memory");
      goto done;
    }
    if (json_object_set_new(root, name, e) < 0) {
      rc = st_fail(err, ST_E_ARG, "tensor '%s': name is not valid UTF-8", QN(name));
      goto done;
    }
    off = end;
  }
  /* json_dumpb into our own buffer: jansson may use custom allocators */
  const size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER;
  size_t len = json_dumpb(root, NULL, 0, flags);
  if (len == 0) {
    rc = st_fail(err, ST_E_ARG, "cannot serialize the header");
    goto done;
  }
  size_t padded = (len + 7) & ~(size_t)7;
  if (padded > ST_MAX_HEADER_SIZE) {
    rc = st_fail(err, ST_E_ARG, "header of %zu bytes exceeds the limit", padded);
    goto done;
  }
  if (!(dump = malloc(padded + 1))) {
    rc = st_fail(err, ST_E_NOMEM, "out of memory");
    goto done;
  }
  if (json_dumpb(root, dump, len, flags) != len) {
    rc = st_fail(err, ST_E_ARG, "cannot serialize the header");
    goto done;
  }
  memset(dump + len, ' ', padded - len);
  dump[padded] = 0;
  *hdr = dump;
  *hlen = padded;
  dump = NULL;
done:
  free(dump);
  json_decref(root);
  return rc;
}

int st_write_fp(void *fp, const struct st_write_tensor *t, size_t n, const json_t *metadata,
                char **err) {
  FILE *out = fp;
  char *hdr = NULL;
  size_t hlen = 0;
  if (err) *err = NULL;
  int rc = st_header_build(t, n, metadata, &hdr, &hlen, err);
  if (rc < 0) return rc;
  uint8_t le[8];
  for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
  if (fwrite(le, 1, 8, out) != 8 || fwrite(hdr, 1, hlen, out) != hlen) goto io;
  for (size_t i = 0; i < n; i++) {
    size_t bytes = st_dtype_size(t[i].dtype);
    for (int d = 0; d < t[i].ndim; d++) bytes *= (size_t)t[i].shape[d]; /* checked above */
    if (bytes && fwrite(t[i].data, 1, bytes, out) != bytes) goto io;
  }
  if (fflush(out) != 0) goto io;
  free(hdr);
  return 0;
io:
  free(hdr);
  return st_fail(err, ST_E_IO, "write failed: %s", strerror(errno));
}

/* fsync of the folder holding path, so the rename is durable. */
static int st_fsync_dir(const char *path) {
  char *dir = strdup(path);
  if (!dir) return -1;
  char *slash = strrchr(dir, '/');
  if (slash == dir)
    dir[1] = 0;
  else if (slash)
    *slash = 0;
  else
    strcpy(dir, ".");
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(dir);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

int st_write(const char *path, const struct st_write_tensor *t, size_t n, const json_t *metadata,
             char **err) {
  int rc = 0;
  FILE *fp = NULL;
  char *tmp = NULL;
  if (err) *err = NULL;
  if (asprintf(&tmp, "%s.tmp", path) < 0) return st_fail(err, ST_E_NOMEM, "out of memory");
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    rc = st_fail(err, ST_E_IO, "cannot create the output file: %s", strerror(errno));
    goto done;
  }
  if (!(fp = fdopen(fd, "wb"))) {
    rc = st_fail(err, ST_E_IO, "cannot open the output stream: %s", strerror(errno));
    close(fd);
    goto unlink;
  }
  if ((rc = st_write_fp(fp, t, n, metadata, err)) < 0) goto unlink;
  if (fsync(fileno(fp)) != 0) {
    rc = st_fail(err, ST_E_IO, "fsync failed: %s", strerror(errno));
    goto unlink;
  }
  int c = fclose(fp);
  fp = NULL;
  if (c != 0) {
    rc = st_fail(err, ST_E_IO, "close failed: %s", strerror(errno));
    goto unlink;
  }
  if (rename(tmp, path) != 0) {
    rc = st_fail(err, ST_E_IO, "rename failed: %s", strerror(errno));
    goto unlink;
  }
  if (st_fsync_dir(path) != 0) {
    rc = st_fail(err, ST_E_IO, "fsync of the folder failed: %s", strerror(errno));
    goto done;
  }
  goto done;
unlink:
  if (fp) fclose(fp);
  unlink(tmp);
done:
  free(tmp);
  return rc;
}
