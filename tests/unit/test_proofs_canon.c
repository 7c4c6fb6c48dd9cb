/* test_proofs_canon.c: RFC 8785 canonical JSON (the RFC's own sorting
 * example, string escapes, nesting, refusal of reals), and Ed25519 keys:
 * created 0600, signing and checking signed objects, any changed byte or
 * another key failing, rotation keeping old signatures valid, loose
 * permissions refused; the audit chain's link hash. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "proofs/canon.h"
#include "proofs/chain.h"
#include "proofs/keys.h"
#include "proofs/receipt.h"

static void expect_canon(const char *in, const char *want) {
  json_error_t je;
  json_t *j = json_loads(in, JSON_ALLOW_NUL | JSON_DECODE_ANY, &je);
  assert_non_null(j);
  char *got = proofs_canon_json(j);
  assert_non_null(got);
  if (strcmp(got, want) != 0) fail_msg("canon(%s)\n got  %s\n want %s", in, got, want);
  free(got);
  json_decref(j);
}

static void test_rfc8785_sorting(void **state) {
  /* RFC 8785 3.2.3: the emoji (UTF-16 D83D DE00) sorts before U+FB33 although
   * its UTF-8 bytes sort after */
  expect_canon("{\"\\u20ac\": \"Euro Sign\", \"\\r\": \"Carriage Return\", \"\\ufb33\": "
               "\"Hebrew Letter Dalet With Dagesh\", \"1\": \"One\", \"\\ud83d\\ude00\": "
               "\"Emoji: Grinning Face\", \"\\u0080\": \"Control\", \"\\u00f6\": "
               "\"Latin Small Letter O With Diaeresis\"}",
               "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\xc2\x80\":\"Control\","
               "\"\xc3\xb6\":\"Latin Small Letter O With Diaeresis\",\"\xe2\x82\xac\":\"Euro "
               "Sign\",\"\xf0\x9f\x98\x80\":\"Emoji: Grinning Face\",\"\xef\xac\xb3\":\"Hebrew "
               "Letter Dalet With Dagesh\"}");
}

static void test_strings_and_nesting(void **state) {
  expect_canon("{\"b\": [1, -2, true, false, null, {\"z\": 0, \"a\": \"x\"}], \"a\": {}}",
               "{\"a\":{},\"b\":[1,-2,true,false,null,{\"a\":\"x\",\"z\":0}]}");
  expect_canon("[\"\\u000f\\u001f\\b\\t\\n\\f\\r\\\"\\\\/\\u007f\\u00e9\"]",
               "[\"\\u000f\\u001f\\b\\t\\n\\f\\r\\\"\\\\/\x7f\xc3\xa9\"]");
  expect_canon("\"ab\"", "\"ab\"");
  expect_canon("{\"aa\": 1, \"a\": 2, \"b\": 3}", "{\"a\":2,\"aa\":1,\"b\":3}");
  json_t *r = json_pack("{s:f}", "w", 0.5);
  assert_null(proofs_canon_json(r)); /* reals are refused, never guessed */
  json_decref(r);
}

static char dir[64];

static void test_keys_sign_verify_rotate(void **state) {
  snprintf(dir, sizeof dir, "/tmp/soupd-keys-XXXXXX");
  assert_non_null(mkdtemp(dir));
  struct proofs_keys *k = NULL;
  char *err = NULL;
  assert_int_equal(proofs_keys_open(dir, &k, &err), 0);
  char path[200];
  snprintf(path, sizeof path, "%s/keys/%s.pem", dir, proofs_keys_current_id(k));
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0600);
  assert_int_equal(strlen(proofs_keys_current_id(k)), PROOFS_KEY_ID_LEN);

  json_t *obj = json_pack("{s:s,s:I,s:{s:s}}", "type", "t", "n", (json_int_t)7, "x", "y", "z");
  assert_int_equal(proofs_object_sign(k, obj, &err), 0);
  json_t *keys = proofs_keys_json(k);
  char why[300];
  assert_int_equal(proofs_object_verify(obj, json_object_get(keys, "keys"), NULL, why, sizeof why),
                   0);
  /* one changed value fails */
  json_t *bad = json_deep_copy(obj);
  json_object_set_new(bad, "n", json_integer(8));
  assert_int_equal(proofs_object_verify(bad, json_object_get(keys, "keys"), NULL, why, sizeof why),
                   -1);
  assert_non_null(strstr(why, "does not match"));
  json_decref(bad);

  /* rotation: the old signature still verifies with the published list, the
   * new key signs, the old signature fails under the new key alone */
  char *new_id = NULL;
  assert_int_equal(proofs_keys_rotate(dir, &new_id, &err), 0);
  proofs_keys_close(k);
  assert_int_equal(proofs_keys_open(dir, &k, &err), 0);
  assert_string_equal(proofs_keys_current_id(k), new_id);
  json_t *keys2 = proofs_keys_json(k);
  json_t *arr = json_object_get(keys2, "keys");
  assert_int_equal(json_array_size(arr), 2);
  assert_true(json_is_string(json_object_get(json_array_get(arr, 0), "retired_at")));
  assert_true(json_is_null(json_object_get(json_array_get(arr, 1), "retired_at")));
  assert_int_equal(proofs_object_verify(obj, arr, NULL, why, sizeof why), 0);
  const char *new_pub = json_string_value(json_object_get(json_array_get(arr, 1), "public_key"));
  assert_int_equal(proofs_object_verify(obj, NULL, new_pub, why, sizeof why), -1);
  free(new_id);
  json_decref(keys2);
  json_decref(keys);
  json_decref(obj);

  /* a private key others can read stops the open with a clear message */
  snprintf(path, sizeof path, "%s/keys/%s.pem", dir, proofs_keys_current_id(k));
  proofs_keys_close(k);
  assert_int_equal(chmod(path, 0644), 0);
  assert_int_equal(proofs_keys_open(dir, &k, &err), -1);
  assert_non_null(err);
  assert_non_null(strstr(err, "chmod 600"));
  free(err);
  char cmd[200];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  assert_int_equal(system(cmd), 0);
}

/* The chain hash tells NULL from "", depends on the previous hash and on
 * where field boundaries fall. */
static void test_chain_hash(void **state) {
  const char *a[] = {"x", NULL, "y"}, *b[] = {"x", "", "y"}, *c[] = {"xy", NULL, ""};
  char ha[65], hb[65], hc[65], ha2[65], hp[65];
  proofs_chain_hash(PROOFS_CHAIN_GENESIS, a, 3, ha);
  proofs_chain_hash(PROOFS_CHAIN_GENESIS, a, 3, ha2);
  proofs_chain_hash(PROOFS_CHAIN_GENESIS, b, 3, hb);
  proofs_chain_hash(PROOFS_CHAIN_GENESIS, c, 3, hc);
  proofs_chain_hash(ha, a, 3, hp);
  assert_string_equal(ha, ha2);
  assert_int_equal(strlen(ha), 64);
  assert_string_not_equal(ha, hb);
  assert_string_not_equal(ha, hc);
  assert_string_not_equal(ha, hp);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rfc8785_sorting),
      cmocka_unit_test(test_strings_and_nesting),
      cmocka_unit_test(test_keys_sign_verify_rotate),
      cmocka_unit_test(test_chain_hash),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
