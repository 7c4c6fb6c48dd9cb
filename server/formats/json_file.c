/* json_file.c: JSON files with Python's non-standard numbers (json_file.h). */
#include "json_file.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_FILE_MAX (64u << 20) /* a config or tokenizer file; tokenizer.json is a few MB */

/* Copies src into dst, quoting bare NaN / Infinity / -Infinity outside
 * strings. dst holds at least 2 * n + 1 bytes. Returns the new length. */
static size_t quote_nonfinite(const char *src, size_t n, char *dst) {
  static const char *toks[] = {"-Infinity", "Infinity", "NaN"};
  size_t o = 0;
  int in_str = 0;
  for (size_t i = 0; i < n; i++) {
    char c = src[i];
    if (in_str) {
      dst[o++] = c;
      if (c == '\\' && i + 1 < n)
        dst[o++] = src[++i];
      else if (c == '"')
        in_str = 0;
      continue;
    }
    if (c == '"') {
      in_str = 1;
      dst[o++] = c;
      continue;
    }
    int done = 0;
    for (int t = 0; t < 3 && !done; t++) {
      size_t l = strlen(toks[t]);
      if (i + l <= n && memcmp(src + i, toks[t], l) == 0) {
        dst[o++] = '"';
        memcpy(dst + o, toks[t], l);
        o += l;
        dst[o++] = '"';
        i += l - 1;
        done = 1;
      }
    }
    if (!done) dst[o++] = c;
  }
  dst[o] = 0;
  return o;
}

json_t *json_file_loadb(const char *buf, size_t n, size_t flags, json_error_t *je) {
  char *dst = n <= JSON_FILE_MAX ? malloc(2 * n + 1) : NULL;
  if (!dst) {
    if (je) {
      snprintf(je->text, sizeof je->text, "out of memory (or over %u MiB)", JSON_FILE_MAX >> 20);
      je->line = 0;
    }
    return NULL;
  }
  json_t *j = json_loadb(dst, quote_nonfinite(buf, n, dst), flags, je);
  free(dst);
  return j;
}

json_t *json_file_load(const char *path, size_t flags, json_error_t *je) {
  FILE *f = fopen(path, "rb");
  if (!f) return json_load_file(path, flags, je); /* jansson's own message */
  char *src = NULL;
  json_t *j = NULL;
  size_t n = 0;
  if (fseek(f, 0, SEEK_END) == 0) {
    long len = ftell(f);
    if (len >= 0 && (unsigned long)len <= JSON_FILE_MAX && fseek(f, 0, SEEK_SET) == 0) {
      n = (size_t)len;
      src = malloc(n + 1);
    }
  }
  if (src && fread(src, 1, n, f) == n) {
    j = json_file_loadb(src, n, flags, je);
  } else if (je) {
    snprintf(je->text, sizeof je->text, "cannot read the file (or it exceeds %u MiB)",
             JSON_FILE_MAX >> 20);
    je->line = 0;
  }
  fclose(f);
  free(src);
  return j;
}

int json_file_number(const json_t *v, double *out) {
  if (json_is_number(v)) {
    *out = json_number_value(v);
    return 1;
  }
  const char *s = json_string_value(v);
  if (!s) return 0;
  if (strcmp(s, "NaN") == 0)
    *out = NAN;
  else if (strcmp(s, "Infinity") == 0)
    *out = INFINITY;
  else if (strcmp(s, "-Infinity") == 0)
    *out = -INFINITY;
  else
    return 0;
  return 1;
}
