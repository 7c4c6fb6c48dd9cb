/* fuzz_json_file.c: libFuzzer target for the reader of the model folder's
 * JSON files (server/formats/json_file.c: Python's bare NaN, Infinity and
 * -Infinity outside strings become strings).
 *
 * For every input: no crash or out-of-bounds read; when jansson itself
 * accepts the input (standard JSON, where those bare tokens cannot occur
 * outside strings) json_file_loadb gives an equal value; an accepted value
 * dumps and reads back equal; every number json_file_number reads from the
 * top-level object's members is a number or one of the three spellings.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/formats/json_file.h"
#include "tests/fuzz/fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_error_t je;
  json_t *ours = json_file_loadb((const char *)data, size, JSON_DECODE_ANY, &je);
  json_t *std = json_loadb((const char *)data, size, JSON_DECODE_ANY, &je);
  if (std) CHECK(ours && json_equal(ours, std));
  if (ours) {
    char *s = json_dumps(ours, JSON_COMPACT | JSON_ENCODE_ANY);
    CHECK(s);
    json_t *back = json_file_loadb(s, strlen(s), JSON_DECODE_ANY, &je);
    CHECK(back && json_equal(back, ours));
    json_decref(back);
    free(s);
    if (json_is_object(ours)) {
      const char *k;
      json_t *v;
      json_object_foreach(ours, k, v) {
        double d;
        int got = json_file_number(v, &d);
        const char *sv = json_string_value(v);
        int want =
            json_is_number(v) ||
            (sv && (!strcmp(sv, "NaN") || !strcmp(sv, "Infinity") || !strcmp(sv, "-Infinity")));
        CHECK(got == want);
        if (got && sv) CHECK(!strcmp(sv, "NaN") ? isnan(d) : isinf(d));
      }
    }
  }
  json_decref(ours);
  json_decref(std);
  return 0;
}
