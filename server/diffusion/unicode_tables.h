/* unicode_tables.h: the Unicode data the CLIP tokenizer needs (generated into
 * unicode_tables.c by tests/golden/make_unicode_tables.py).
 *
 * Invariants: every table is sorted ascending by code point (uni_comp by
 * (first, second)); ranges are inclusive and never overlap, so a binary
 * search finds at most one entry. Hangul syllables are not in the
 * decomposition/composition tables (they are algorithmic), and U+0130's
 * two-character lower case (i + U+0307) is not in uni_lower.
 */
#pragma once

#include <stdint.h>

#define UNI_CLASS_L 1u /* \p{L} */
#define UNI_CLASS_N 2u /* \p{N} */
#define UNI_CLASS_S 4u /* \s of the reference regex engine */

struct uni_range {
  uint32_t start, end; /* inclusive */
  uint32_t value;      /* class bits, or the combining class */
};
struct uni_pair {
  uint32_t cp, mapped;
};
struct uni_decomp {
  uint32_t cp;
  uint32_t offset; /* into uni_decomp_pool */
  uint32_t len;    /* full canonical decomposition length */
};
struct uni_comp {
  uint32_t first, second, composite;
};

extern const struct uni_range uni_class_ranges[];
extern const int uni_class_count;
extern const struct uni_pair uni_lower[];
extern const int uni_lower_count;
extern const struct uni_range uni_ccc_ranges[];
extern const int uni_ccc_count;
extern const struct uni_decomp uni_decomp[];
extern const int uni_decomp_count;
extern const uint32_t uni_decomp_pool[];
extern const struct uni_comp uni_comp[];
extern const int uni_comp_count;
