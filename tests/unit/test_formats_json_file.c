/* test_formats_json_file.c: Python's NaN / Infinity / -Infinity in a model
 * folder's JSON read as Python reads them; strings left alone. */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "formats/json_file.h"

static json_t *load_text(const char *text, json_error_t *je) {
  char path[] = "/tmp/soupd-json-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  json_t *j = json_file_load(path, JSON_REJECT_DUPLICATES, je);
  unlink(path);
  return j;
}

static void test_nonfinite_numbers(void **state) {
  json_error_t je;
  json_t *j = load_text("{\"lambda_min_clipped\": -Infinity, \"b\": NaN, \"c\": Infinity,\n"
                        " \"arr\": [1.5, -Infinity], \"s\": \"NaN and \\\"Infinity\\\"\"}",
                        &je);
  assert_non_null(j);
  double x = 0;
  assert_true(json_file_number(json_object_get(j, "lambda_min_clipped"), &x));
  assert_true(isinf(x) && x < 0);
  assert_true(json_file_number(json_object_get(j, "b"), &x) && isnan(x));
  assert_true(json_file_number(json_object_get(j, "c"), &x) && isinf(x) && x > 0);
  json_t *arr = json_object_get(j, "arr");
  assert_true(json_file_number(json_array_get(arr, 0), &x) && x == 1.5);
  assert_true(json_file_number(json_array_get(arr, 1), &x) && isinf(x) && x < 0);
  /* a string is kept as written, escapes included, and is not a number */
  assert_string_equal(json_string_value(json_object_get(j, "s")), "NaN and \"Infinity\"");
  assert_false(json_file_number(json_object_get(j, "s"), &x));
  json_decref(j);
}

static void test_still_strict(void **state) {
  json_error_t je;
  assert_null(load_text("{\"a\": Infinityx}", &je));
  assert_null(load_text("{\"a\": 1, \"a\": 2}", &je)); /* duplicates refused as before */
  assert_null(load_text("{\"a\": inf}", &je));
  assert_null(json_file_load("/nonexistent/soupd.json", 0, &je));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_nonfinite_numbers),
      cmocka_unit_test(test_still_strict),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
