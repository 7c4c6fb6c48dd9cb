/* png.c: see png.h. libpng's error path longjmps back here; every resource
 * is released on both paths. */
#include "png.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

struct membuf {
  uint8_t *p;
  size_t len, cap;
  int oom;
};

static void mem_write(png_structp png, png_bytep data, png_size_t n) {
  struct membuf *m = png_get_io_ptr(png);
  if (m->oom) return;
  if (m->len + n > m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 65536;
    while (cap < m->len + n) cap *= 2;
    uint8_t *q = realloc(m->p, cap);
    if (!q) {
      m->oom = 1;
      return;
    }
    m->p = q, m->cap = cap;
  }
  memcpy(m->p + m->len, data, n);
  m->len += n;
}

static void mem_flush(png_structp png) {
  (void)png;
}

/* 1 if the UTF-8 string only holds code points <= U+00FF (then converted into out). */
static int to_latin1(const char *s, char *out, size_t cap) {
  size_t o = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p;) {
    unsigned cp;
    if (*p < 0x80)
      cp = *p++;
    else if ((p[0] & 0xe0) == 0xc0 && (p[1] & 0xc0) == 0x80) {
      cp = ((p[0] & 0x1fu) << 6) | (p[1] & 0x3fu);
      p += 2;
    } else
      return 0;
    if (cp > 0xff || o + 1 >= cap) return 0;
    out[o++] = (char)cp;
  }
  out[o] = 0;
  return 1;
}

int png_encode_rgb(const uint8_t *rgb, int w, int h, const struct png_kv *kv, int n_kv,
                   uint8_t **out, size_t *len, char **err) {
  struct membuf m = {0};
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  png_textp texts = calloc((size_t)n_kv + 1, sizeof *texts);
  char **latin = calloc((size_t)n_kv + 1, sizeof *latin);
  png_bytep *rows = calloc((size_t)h + 1, sizeof *rows);
  if (!png || !info || !texts || !latin || !rows) goto fail;
  if (setjmp(png_jmpbuf(png))) goto fail;
  png_set_write_fn(png, &m, mem_write, mem_flush);
  png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(png, 6);
  for (int i = 0; i < n_kv; i++) {
    size_t cap = strlen(kv[i].text) + 1;
    latin[i] = malloc(cap);
    if (!latin[i]) goto fail;
    texts[i].key = (png_charp)kv[i].key;
    if (to_latin1(kv[i].text, latin[i], cap)) {
      texts[i].compression = PNG_TEXT_COMPRESSION_NONE;
      texts[i].text = latin[i];
    } else {
      texts[i].compression = PNG_ITXT_COMPRESSION_NONE;
      texts[i].text = (png_charp)kv[i].text;
      texts[i].lang = (png_charp) "";
      texts[i].lang_key = (png_charp) "";
    }
  }
  png_set_text(png, info, texts, n_kv);
  for (int y = 0; y < h; y++) rows[y] = (png_bytep)(rgb + (size_t)y * (size_t)w * 3);
  png_set_rows(png, info, rows);
  png_write_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
  if (m.oom) goto fail;
  png_destroy_write_struct(&png, &info);
  for (int i = 0; i < n_kv; i++) free(latin[i]);
  free(latin), free(texts), free(rows);
  *out = m.p;
  *len = m.len;
  return 0;
fail:
  if (png) png_destroy_write_struct(&png, info ? &info : NULL);
  for (int i = 0; latin && i < n_kv; i++) free(latin[i]);
  free(latin), free(texts), free(rows), free(m.p);
  if (err) *err = strdup("PNG encoding failed");
  return -1;
}
