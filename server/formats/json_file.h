/* json_file.h: the model folder's JSON files as Python writes them.
 *
 * Python's json module (and so diffusers and transformers) writes the
 * non-standard numbers NaN, Infinity and -Infinity bare; jansson refuses
 * them and holds no non-finite real. json_file_load rewrites those tokens,
 * outside strings only, into the strings "NaN", "Infinity", "-Infinity";
 * json_file_number reads a number field, taking those strings as the
 * values Python meant. */
#pragma once

#include <jansson.h>

/* Like json_load_file (flags as jansson's). NULL with *je on failure. */
json_t *json_file_load(const char *path, size_t flags, json_error_t *je);
/* The same for n bytes in memory. */
json_t *json_file_loadb(const char *buf, size_t n, size_t flags, json_error_t *je);
/* A number, or one of the strings "NaN", "Infinity", "-Infinity". Returns 1
 * and *out, or 0 if v is neither. */
int json_file_number(const json_t *v, double *out);
