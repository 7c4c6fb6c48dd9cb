/* canon.h: RFC 8785 (JSON Canonicalization Scheme) for jansson values, the
 * bytes every soupd signature covers. */
#pragma once

#include <jansson.h>

/* The canonical encoding of v (malloc'd, NUL-terminated), or NULL when v
 * holds a real number (proofs carry integers only, so ES6 number formatting
 * is never needed) or on out of memory. Object keys are sorted by their
 * UTF-16 code units; strings escape only '"', '\\' and control characters. */
char *proofs_canon_json(const json_t *v);
