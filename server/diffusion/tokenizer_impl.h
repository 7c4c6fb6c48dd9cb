/* tokenizer_impl.h: internals of the CLIP tokenizer shared by tokenizer.c
 * (vocabulary, BPE, framing) and tokenizer_text.c (Unicode text processing:
 * UTF-8, NFC, whitespace, lower-casing, pre-tokenisation).
 *
 * Text is handled as arrays of code points (uint32_t). Nothing here keeps
 * state: every function is reentrant.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Decodes strict UTF-8 (no overlongs, surrogates or values > U+10FFFF).
 * Returns 0 and a malloc'd array, or -1 on invalid input / allocation. */
int tok_utf8_decode(const char *s, size_t n, uint32_t **out, size_t *out_n);
/* Writes cp as UTF-8 into buf (>= 4 bytes); returns the byte count. */
size_t tok_utf8_encode(uint32_t cp, char *buf);

/* UNI_CLASS_* bits of cp. */
unsigned tok_char_class(uint32_t cp);

/* The normalizer sequence: NFC, then every run of \s replaced by one space,
 * then per-character lower-casing. Returns 0 and a malloc'd array, or -1. */
int tok_normalize(const uint32_t *in, size_t n, uint32_t **out, size_t *out_n);

/* Pre-tokenisation: the CLIP split pattern, then the byte-level (GPT-2)
 * pattern inside each piece. fn is called for each final piece in order;
 * a non-zero return from fn stops the walk and is returned. */
typedef int (*tok_piece_fn)(void *ctx, const uint32_t *cps, size_t n);
int tok_pretokenize(const uint32_t *cps, size_t n, tok_piece_fn fn, void *ctx);
