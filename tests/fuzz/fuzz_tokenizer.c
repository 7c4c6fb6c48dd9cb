/* fuzz_tokenizer.c: libFuzzer target for the CLIP tokenizer on client text
 * (the prompt of every /generate), with the real CLIP vocabulary of the
 * tiny-sd2 fixture (TOKENIZER_DIR, compiled in).
 *
 * For every input: no crash; tokenizer_encode_n fails only on invalid UTF-8
 * (-EINVAL, with a message); on success the ids are BOS, content ids inside
 * the vocabulary, EOS at n_real - 1 (2 <= n_real <= 77), then padding; the
 * same input gives the same ids again (the word cache changes nothing).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/diffusion/tokenizer.h"
#include "tests/fuzz/fuzz_check.h"

static struct tokenizer *tok;

/* 1 if s[0..n) is well-formed UTF-8 (RFC 3629: no overlongs, surrogates or
 * code points past U+10FFFF) */
static int utf8_ok(const uint8_t *s, size_t n) {
  for (size_t i = 0; i < n;) {
    uint8_t c = s[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!len || i + len > n || (len == 2 && c < 0xc2)) return 0;
    uint32_t cp = len == 1 ? c : c & (0x7f >> len);
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return 0;
      cp = cp << 6 | (s[i + k] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    i += len;
  }
  return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char *err = NULL;
  if (tokenizer_load(TOKENIZER_DIR, &tok, &err) != 0) {
    fprintf(stderr, "fuzz_tokenizer: %s\n", err ? err : "cannot load the tokenizer");
    abort();
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int32_t ids[TOKENIZER_MAX_LEN], again[TOKENIZER_MAX_LEN];
  int n = 0, n2 = 0;
  char *err = NULL;
  int rc = tokenizer_encode_n(tok, (const char *)data, size, ids, &n, &err);
  if (rc != 0) {
    CHECK(rc == -EINVAL && err && !utf8_ok(data, size));
    free(err);
    return 0;
  }
  CHECK(utf8_ok(data, size));
  CHECK(n >= 2 && n <= TOKENIZER_MAX_LEN);
  CHECK(ids[0] == tokenizer_bos_id(tok) && ids[n - 1] == tokenizer_eos_id(tok));
  for (int i = 1; i < n - 1; i++) CHECK(ids[i] >= 0 && ids[i] < 1 << 20);
  for (int i = n; i < TOKENIZER_MAX_LEN; i++) CHECK(ids[i] == tokenizer_pad_id(tok));
  CHECK(tokenizer_encode_n(tok, (const char *)data, size, again, &n2, &err) == 0);
  CHECK(n2 == n && !memcmp(ids, again, sizeof ids));
  return 0;
}
