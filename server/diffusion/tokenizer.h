/* tokenizer.h: the CLIP BPE tokenizer of Stable Diffusion, bit-exact with the
 * tokenizer diffusers' pipeline loads under transformers 5.24 (the
 * `tokenizers`-backed CLIPTokenizer; see tokenizer.c for the exact rules).
 *
 * Invariants: a loaded tokenizer is immutable except for its bounded word
 * cache, which is guarded by a mutex, so tokenizer_encode may be called from
 * any number of threads at once. Output is always TOKENIZER_MAX_LEN ids:
 * BOS, at most 75 content ids, EOS, then the pad id.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TOKENIZER_MAX_LEN 77

struct tokenizer;

/* Loads <dir>/vocab.json and <dir>/merges.txt, and the special tokens from
 * <dir>/special_tokens_map.json and <dir>/tokenizer_config.json (both
 * optional). Returns 0, or a negative status with *err (malloc'd). */
int tokenizer_load(const char *dir, struct tokenizer **out, char **err);
void tokenizer_free(struct tokenizer *tok);

/* Encodes UTF-8 text (NUL-terminated) into ids[TOKENIZER_MAX_LEN] as the
 * pipeline does (padding="max_length", max_length=77, truncation=True).
 * *n_real (may be NULL) receives the number of non-padding positions
 * (content + BOS + EOS, 2..77). Invalid UTF-8 is an error (-EINVAL). */
int tokenizer_encode(struct tokenizer *tok, const char *text, int32_t ids[TOKENIZER_MAX_LEN],
                     int *n_real, char **err);
/* The same for text of len bytes that may contain NUL (U+0000 is an
 * ordinary punctuation-class character to the reference tokenizer). */
int tokenizer_encode_n(struct tokenizer *tok, const char *text, size_t len,
                       int32_t ids[TOKENIZER_MAX_LEN], int *n_real, char **err);

int32_t tokenizer_pad_id(const struct tokenizer *tok);
int32_t tokenizer_bos_id(const struct tokenizer *tok);
int32_t tokenizer_eos_id(const struct tokenizer *tok);

/* `soupd tokenize --model DIR TEXT`: loads DIR/tokenizer and prints the 77
 * ids on one line, space-separated, newline-terminated. */
int tokenizer_cli_print(const char *model_dir, const char *text, FILE *out, char **err);
