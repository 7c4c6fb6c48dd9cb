/* tokenizer_text.c: the Unicode text processing of the CLIP tokenizer, as
 * the `tokenizers` library does it for transformers 5.24's CLIPTokenizer:
 *
 *  - normalizer: NFC; then Replace(\s+ -> " "); then Lowercase (per
 *    character, full mapping: U+0130 becomes "i" U+0307; no final-sigma rule);
 *  - pre-tokenizer 1, Split (matches kept, the rest removed) on
 *      <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 *  - pre-tokenizer 2, ByteLevel(use_regex) inside each piece:
 *      's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *    (the pieces hold no whitespace, so only the first six alternatives can
 *    match; it matters for a piece "<|endoftext|>" -> "<|", "endoftext", "|>").
 *
 * Both patterns are leftmost-first alternations with greedy classes, so a
 * left-to-right scan trying the alternatives in order reproduces them.
 * Character classes, case and NFC data come from unicode_tables.c, which
 * reproduces the reference's own mix of Unicode versions (regex classes and
 * case: Unicode 16; NFC: an older table in which some recent marks have
 * combining class 0); see tests/golden/make_unicode_tables.py. Checked
 * against transformers on ~25k random strings weighted to marks and
 * decomposable characters, and by the golden test's fixed cases.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_impl.h"
#include "unicode_tables.h"

/* ---- UTF-8 ---- */

int tok_utf8_decode(const char *s, size_t n, uint32_t **out, size_t *out_n) {
  const unsigned char *p = (const unsigned char *)s;
  uint32_t *cps = malloc((n ? n : 1) * sizeof *cps);
  if (!cps) return -1;
  size_t k = 0, i = 0;
  while (i < n) {
    uint32_t c = p[i], cp;
    int len;
    if (c < 0x80) {
      cp = c, len = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      cp = c & 0x1F, len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      cp = c & 0x0F, len = 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
      cp = c & 0x07, len = 4;
    } else {
      goto fail;
    }
    if (i + (size_t)len > n) goto fail;
    for (int j = 1; j < len; j++) {
      if ((p[i + j] & 0xC0) != 0x80) goto fail;
      cp = (cp << 6) | (p[i + j] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      goto fail;
    cps[k++] = cp;
    i += (size_t)len;
  }
  *out = cps;
  *out_n = k;
  return 0;
fail:
  free(cps);
  return -1;
}

size_t tok_utf8_encode(uint32_t cp, char *buf) {
  unsigned char *b = (unsigned char *)buf;
  if (cp < 0x80) {
    b[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    b[0] = (unsigned char)(0xC0 | (cp >> 6));
    b[1] = (unsigned char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    b[0] = (unsigned char)(0xE0 | (cp >> 12));
    b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    b[2] = (unsigned char)(0x80 | (cp & 0x3F));
    return 3;
  }
  b[0] = (unsigned char)(0xF0 | (cp >> 18));
  b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
  b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
  b[3] = (unsigned char)(0x80 | (cp & 0x3F));
  return 4;
}

/* ---- table look-ups ---- */

static uint32_t range_lookup(const struct uni_range *r, int n, uint32_t cp) {
  int lo = 0, hi = n - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (cp < r[mid].start)
      hi = mid - 1;
    else if (cp > r[mid].end)
      lo = mid + 1;
    else
      return r[mid].value;
  }
  return 0;
}

unsigned tok_char_class(uint32_t cp) {
  if (cp < 0x80) { /* fast path */
    if (cp == ' ' || (cp >= 9 && cp <= 13)) return UNI_CLASS_S;
    if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return UNI_CLASS_L;
    if (cp >= '0' && cp <= '9') return UNI_CLASS_N;
    return 0;
  }
  return range_lookup(uni_class_ranges, uni_class_count, cp);
}

static unsigned ccc_of(uint32_t cp) {
  if (cp < 0x300) return 0;
  return range_lookup(uni_ccc_ranges, uni_ccc_count, cp);
}

static uint32_t lower_of(uint32_t cp) {
  if (cp < 0x80) return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
  int lo = 0, hi = uni_lower_count - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (uni_lower[mid].cp == cp) return uni_lower[mid].mapped;
    if (uni_lower[mid].cp < cp)
      lo = mid + 1;
    else
      hi = mid - 1;
  }
  return cp;
}

static const struct uni_decomp *decomp_of(uint32_t cp) {
  int lo = 0, hi = uni_decomp_count - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (uni_decomp[mid].cp == cp) return &uni_decomp[mid];
    if (uni_decomp[mid].cp < cp)
      lo = mid + 1;
    else
      hi = mid - 1;
  }
  return NULL;
}

/* Hangul syllables (Unicode 3.12, conjoining jamo behaviour). */
enum { SBASE = 0xAC00, LBASE = 0x1100, VBASE = 0x1161, TBASE = 0x11A7 };
enum { LCOUNT = 19, VCOUNT = 21, TCOUNT = 28, NCOUNT = VCOUNT * TCOUNT, SCOUNT = LCOUNT * NCOUNT };

/* The primary composite of (a, b), or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
    return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
  if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE &&
      b < TBASE + TCOUNT)
    return a + (b - TBASE);
  int lo = 0, hi = uni_comp_count - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    const struct uni_comp *c = &uni_comp[mid];
    if (c->first == a && c->second == b) return c->composite;
    if (c->first < a || (c->first == a && c->second < b))
      lo = mid + 1;
    else
      hi = mid - 1;
  }
  return 0;
}

/* ---- normalizer ---- */

/* NFC in place on a buffer with room for the decomposition. Returns the new
 * length; buf holds at least 4 * n + 4 entries (canonical decompositions
 * are at most 4 code points; Hangul at most 3). */
static size_t nfc(const uint32_t *in, size_t n, uint32_t *buf) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t c = in[i];
    if (c >= SBASE && c < SBASE + SCOUNT) {
      uint32_t s = c - SBASE;
      buf[k++] = LBASE + s / NCOUNT;
      buf[k++] = VBASE + (s % NCOUNT) / TCOUNT;
      if (s % TCOUNT) buf[k++] = TBASE + s % TCOUNT;
      continue;
    }
    const struct uni_decomp *d = c >= 0xC0 ? decomp_of(c) : NULL;
    if (d) {
      for (uint32_t j = 0; j < d->len; j++) buf[k++] = uni_decomp_pool[d->offset + j];
    } else {
      buf[k++] = c;
    }
  }
  /* Canonical ordering: stable sort of each run of non-starters by class. */
  for (size_t i = 1; i < k; i++) {
    unsigned ci = ccc_of(buf[i]);
    if (ci == 0) continue;
    size_t j = i;
    while (j > 0) {
      unsigned cj = ccc_of(buf[j - 1]);
      if (cj <= ci) break;
      uint32_t t = buf[j];
      buf[j] = buf[j - 1];
      buf[j - 1] = t;
      j--;
    }
  }
  /* Canonical composition. */
  if (k == 0) return 0;
  size_t starter = 0, out = 1;
  unsigned last_class = ccc_of(buf[0]);
  int have_starter = last_class == 0;
  if (!have_starter) last_class = 256;
  for (size_t i = 1; i < k; i++) {
    uint32_t ch = buf[i];
    unsigned cc = ccc_of(ch);
    if (have_starter && (last_class < cc || last_class == 0)) {
      uint32_t comp = compose(buf[starter], ch);
      if (comp) {
        buf[starter] = comp;
        continue;
      }
    }
    if (cc == 0) {
      starter = out;
      have_starter = 1;
    }
    last_class = cc;
    buf[out++] = ch;
  }
  return out;
}

int tok_normalize(const uint32_t *in, size_t n, uint32_t **out, size_t *out_n) {
  uint32_t *buf = malloc((4 * n + 4) * sizeof *buf), *dst = NULL;
  if (!buf) return -1;
  size_t k = nfc(in, n, buf);
  dst = malloc((2 * k + 1) * sizeof *dst); /* U+0130 lowers to two code points */
  if (!dst) {
    free(buf);
    return -1;
  }
  /* Whitespace runs -> one space, and lower-casing, in one pass. */
  size_t w = 0;
  for (size_t r = 0; r < k; r++) {
    uint32_t c = buf[r];
    if (tok_char_class(c) & UNI_CLASS_S) {
      if (r == 0 || !(tok_char_class(buf[r - 1]) & UNI_CLASS_S)) dst[w++] = ' ';
      continue;
    }
    if (c == 0x130) {
      dst[w++] = 'i';
      dst[w++] = 0x307;
      continue;
    }
    dst[w++] = lower_of(c);
  }
  free(buf);
  *out = dst;
  *out_n = w;
  return 0;
}

/* ---- pre-tokenisation ---- */

static const char *const CONTRACTIONS[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
static const char *const SPECIALS[] = {"<|startoftext|>", "<|endoftext|>"};

/* Length of the ASCII literal lit at cps[i..n), or 0 if it does not match. */
static size_t match_lit(const uint32_t *cps, size_t n, size_t i, const char *lit) {
  size_t len = strlen(lit);
  if (n - i < len) return 0;
  for (size_t j = 0; j < len; j++)
    if (cps[i + j] != (unsigned char)lit[j]) return 0;
  return len;
}

/* The match of one pattern starting exactly at i (cps[i] is not \s), or 0.
 * clip = 1: the CLIP pattern (specials first, single digits);
 * clip = 0: the byte-level pattern (digit runs). */
static size_t match_at(const uint32_t *cps, size_t n, size_t i, int clip) {
  size_t len;
  if (clip)
    for (size_t s = 0; s < 2; s++)
      if ((len = match_lit(cps, n, i, SPECIALS[s]))) return len;
  for (size_t s = 0; s < sizeof CONTRACTIONS / sizeof *CONTRACTIONS; s++)
    if ((len = match_lit(cps, n, i, CONTRACTIONS[s]))) return len;
  unsigned c0 = tok_char_class(cps[i]);
  size_t j = i + 1;
  if (c0 & UNI_CLASS_L) {
    while (j < n && (tok_char_class(cps[j]) & UNI_CLASS_L)) j++;
  } else if (c0 & UNI_CLASS_N) {
    if (!clip)
      while (j < n && (tok_char_class(cps[j]) & UNI_CLASS_N)) j++;
  } else {
    while (j < n && !(tok_char_class(cps[j]) & (UNI_CLASS_L | UNI_CLASS_N | UNI_CLASS_S))) j++;
  }
  return j - i;
}

int tok_pretokenize(const uint32_t *cps, size_t n, tok_piece_fn fn, void *ctx) {
  size_t i = 0;
  while (i < n) {
    if (tok_char_class(cps[i]) & UNI_CLASS_S) {
      i++;
      continue;
    }
    size_t len = match_at(cps, n, i, 1);
    /* Byte-level split inside the CLIP piece (no whitespace in it). */
    for (size_t p = i; p < i + len;) {
      size_t l2 = match_at(cps, i + len, p, 0);
      int rc = fn(ctx, cps + p, l2);
      if (rc) return rc;
      p += l2;
    }
    i += len;
  }
  return 0;
}
