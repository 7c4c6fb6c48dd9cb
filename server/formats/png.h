/* png.h: 8-bit RGB PNG encoding through libpng, with text chunks (the
 * AUTOMATIC1111 "parameters" infotext and soupd's provenance). Output is
 * deterministic: same pixels and texts -> same bytes (no time chunk, fixed
 * compression settings). A text that is Latin-1 encodable is written as an
 * uncompressed tEXt chunk (what most readers, e.g. exifr, understand), other
 * text as an uncompressed UTF-8 iTXt chunk. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct png_kv {
  const char *key;  /* 1..79 Latin-1 characters */
  const char *text; /* UTF-8 */
};

/* rgb: h rows of w * 3 bytes. *out is malloc'd (caller frees). */
int png_encode_rgb(const uint8_t *rgb, int w, int h, const struct png_kv *kv, int n_kv,
                   uint8_t **out, size_t *len, char **err);
