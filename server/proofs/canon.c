/* canon.c: RFC 8785 canonical JSON. No whitespace; object members sorted by
 * the UTF-16 code units of their names (RFC 8785 3.2.3), which differs from
 * byte order only for characters above U+FFFF against U+E000..U+FFFF;
 * strings as in ES6 JSON.stringify (3.2.2.2): \b \t \n \f \r \" \\ and
 * \u00xx (lowercase hex) for the other controls, everything else as is
 * (jansson strings are valid UTF-8). Integers print as decimal; a real
 * number makes the encoding fail (proofs never carry one). */
#include "canon.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct buf {
  char *p;
  size_t n, cap;
  int oom;
};

static void put(struct buf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n + 1) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) {
      b->oom = 1;
      return;
    }
    b->p = q, b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}

static void put_string(struct buf *b, const char *s, size_t n) {
  put(b, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    const char *esc = NULL;
    char u[8];
    switch (c) {
    case '"':
      esc = "\\\"";
      break;
    case '\\':
      esc = "\\\\";
      break;
    case '\b':
      esc = "\\b";
      break;
    case '\f':
      esc = "\\f";
      break;
    case '\n':
      esc = "\\n";
      break;
    case '\r':
      esc = "\\r";
      break;
    case '\t':
      esc = "\\t";
      break;
    default:
      if (c < 0x20) {
        snprintf(u, sizeof u, "\\u%04x", c);
        esc = u;
      }
    }
    if (esc)
      put(b, esc, strlen(esc));
    else
      put(b, (const char *)&s[i], 1);
  }
  put(b, "\"", 1);
}

/* Next UTF-16 code unit of a UTF-8 string; *pend holds a pending low
 * surrogate. Returns -1 at the end. */
static int next_unit(const unsigned char **p, const unsigned char *end, int *pend) {
  if (*pend >= 0) {
    int u = *pend;
    *pend = -1;
    return u;
  }
  if (*p >= end) return -1;
  unsigned c = *(*p)++;
  uint32_t cp = c;
  int more = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
  if (more) cp = c & (0x3f >> more);
  while (more-- > 0 && *p < end) cp = (cp << 6) | (*(*p)++ & 0x3f);
  if (cp >= 0x10000) {
    cp -= 0x10000;
    *pend = (int)(0xdc00 | (cp & 0x3ff));
    return (int)(0xd800 | (cp >> 10));
  }
  return (int)cp;
}

static int utf16_cmp(const char *a, const char *b) {
  const unsigned char *pa = (const unsigned char *)a, *pb = (const unsigned char *)b;
  const unsigned char *ea = pa + strlen(a), *eb = pb + strlen(b);
  int qa = -1, qb = -1;
  for (;;) {
    int ua = next_unit(&pa, ea, &qa), ub = next_unit(&pb, eb, &qb);
    if (ua != ub) return ua < ub ? -1 : 1; /* -1 (end) sorts first */
    if (ua < 0) return 0;
  }
}

static int key_cmp(const void *x, const void *y) {
  return utf16_cmp(*(const char *const *)x, *(const char *const *)y);
}

static int encode(struct buf *b, const json_t *v) {
  char num[32];
  switch (json_typeof(v)) {
  case JSON_NULL:
    put(b, "null", 4);
    return 0;
  case JSON_TRUE:
    put(b, "true", 4);
    return 0;
  case JSON_FALSE:
    put(b, "false", 5);
    return 0;
  case JSON_INTEGER:
    snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    put(b, num, strlen(num));
    return 0;
  case JSON_REAL:
    return -1;
  case JSON_STRING:
    put_string(b, json_string_value(v), json_string_length(v));
    return 0;
  case JSON_ARRAY:
    put(b, "[", 1);
    for (size_t i = 0; i < json_array_size(v); i++) {
      if (i) put(b, ",", 1);
      if (encode(b, json_array_get(v, i)) != 0) return -1;
    }
    put(b, "]", 1);
    return 0;
  case JSON_OBJECT: {
    size_t n = json_object_size(v), i = 0;
    const char **keys = calloc(n ? n : 1, sizeof *keys);
    if (!keys) return -1;
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)v, k, x) keys[i++] = k;
    qsort(keys, n, sizeof *keys, key_cmp);
    put(b, "{", 1);
    int rc = 0;
    for (i = 0; i < n && rc == 0; i++) {
      if (i) put(b, ",", 1);
      put_string(b, keys[i], strlen(keys[i]));
      put(b, ":", 1);
      rc = encode(b, json_object_get(v, keys[i]));
    }
    put(b, "}", 1);
    free(keys);
    return rc;
  }
  }
  return -1;
}

char *proofs_canon_json(const json_t *v) {
  struct buf b = {0};
  if (!v || encode(&b, v) != 0 || b.oom) {
    free(b.p);
    return NULL;
  }
  if (!b.p) put(&b, "", 0);
  return b.p;
}
