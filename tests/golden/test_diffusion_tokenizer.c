/* test_diffusion_tokenizer.c: the C CLIP tokenizer against transformers 5.24.
 *
 * tests/fixtures/text/tokenizer_cases.json (gen_text.py) holds a few hundred
 * strings and the 77 ids transformers' CLIPTokenizer gives for each, as
 * diffusers' pipeline calls it, for four tokenizer folders (tiny SD1, tiny
 * SD2, and Hub-style SD1.5 / SD2.1 special-token files). Every case must
 * agree exactly; a failure prints the text, the position and both ids.
 * Also: the CLI line, concurrent encodes from several threads, invalid UTF-8.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion/tokenizer.h"

static const char *src_dir(void) {
  const char *s = getenv("SOUPD_SOURCE_DIR");
  return s ? s : SOUPD_SOURCE_DIR;
}

static json_t *load_cases(void) {
  char path[4096];
  snprintf(path, sizeof path, "%s/tests/fixtures/text/tokenizer_cases.json", src_dir());
  json_error_t je;
  json_t *doc = json_load_file(path, JSON_ALLOW_NUL, &je);
  if (!doc) fail_msg("cannot load %s: %s", path, je.text);
  return doc;
}

static struct tokenizer *load_folder(json_t *doc, const char *name) {
  char path[4096];
  const char *rel = json_string_value(json_object_get(json_object_get(doc, "folders"), name));
  assert_non_null(rel);
  snprintf(path, sizeof path, "%s/tests/fixtures/%s", src_dir(), rel);
  struct tokenizer *tok = NULL;
  char *err = NULL;
  int rc = tokenizer_load(path, &tok, &err);
  if (rc) fail_msg("tokenizer_load(%s): %s", path, err ? err : "?");
  return tok;
}

/* Compares every case for one folder; returns the number of mismatches. */
static int check_folder(json_t *doc, const char *name, struct tokenizer *tok, int verbose) {
  json_t *cases = json_object_get(doc, "cases");
  size_t i;
  json_t *c;
  int bad = 0;
  json_array_foreach(cases, i, c) {
    json_t *jt = json_object_get(c, "text");
    const char *text = json_string_value(jt); /* may hold NUL: use the length */
    json_t *ref = json_object_get(json_object_get(c, "ids"), name);
    int32_t ids[TOKENIZER_MAX_LEN];
    int n_real = 0;
    char *err = NULL;
    if (tokenizer_encode_n(tok, text, json_string_length(jt), ids, &n_real, &err)) {
      if (verbose) print_error("[%s] case %zu: encode failed: %s\n", name, i, err);
      free(err);
      bad++;
      continue;
    }
    for (int k = 0; k < TOKENIZER_MAX_LEN; k++) {
      int32_t want = (int32_t)json_integer_value(json_array_get(ref, (size_t)k));
      if (ids[k] != want) {
        if (verbose) {
          char *shown = json_dumps(jt, JSON_ENCODE_ANY);
          print_error("[%s] case %zu %s: position %d: got %d, transformers %d\n", name, i,
                      shown ? shown : "?", k, ids[k], want);
          free(shown);
        }
        bad++;
        break;
      }
    }
    if (n_real < 2 || n_real > TOKENIZER_MAX_LEN || ids[n_real - 1] != tokenizer_eos_id(tok)) bad++;
  }
  return bad;
}

static void test_folder(const char *name) {
  json_t *doc = load_cases();
  struct tokenizer *tok = load_folder(doc, name);
  int bad = check_folder(doc, name, tok, 1);
  print_message("[%s] %zu cases, %d mismatches\n", name,
                json_array_size(json_object_get(doc, "cases")), bad);
  assert_int_equal(bad, 0);
  tokenizer_free(tok);
  json_decref(doc);
}

static void test_sd1(void **state) {
  test_folder("sd1");
}
static void test_sd2(void **state) {
  test_folder("sd2");
}
static void test_sd1_hub(void **state) {
  test_folder("sd1_hub");
}
static void test_sd2_hub(void **state) {
  test_folder("sd2_hub");
}

/* The same tokenizer as saved by transformers 5 (tokenizer.json alone, no
 * vocab.json or merges.txt; gen_tokenizer_json.py): every case gives the
 * sd2 reference ids. */
static void test_sd2_tokenizer_json(void **state) {
  json_t *doc = load_cases();
  char path[4096];
  snprintf(path, sizeof path, "%s/tests/fixtures/text/sd2-tokenizer-json", src_dir());
  struct tokenizer *tok = NULL;
  char *err = NULL;
  if (tokenizer_load(path, &tok, &err)) fail_msg("tokenizer_load(%s): %s", path, err ? err : "?");
  int bad = check_folder(doc, "sd2", tok, 1);
  tokenizer_free(tok);
  json_decref(doc);
  assert_int_equal(bad, 0);
}

static void test_pad_ids(void **state) {
  json_t *doc = load_cases();
  struct tokenizer *t1 = load_folder(doc, "sd1"), *t2 = load_folder(doc, "sd2");
  assert_int_equal(tokenizer_pad_id(t1), 49407);
  assert_int_equal(tokenizer_pad_id(t2), 0);
  assert_int_equal(tokenizer_bos_id(t2), 49406);
  assert_int_equal(tokenizer_eos_id(t2), 49407);
  tokenizer_free(t1);
  tokenizer_free(t2);
  json_decref(doc);
}

struct thread_arg {
  json_t *doc;
  struct tokenizer *tok;
  int bad;
};

static void *thread_main(void *p) {
  struct thread_arg *a = p;
  for (int r = 0; r < 3; r++) a->bad += check_folder(a->doc, "sd2", a->tok, 0);
  return NULL;
}

static void test_threads(void **state) {
  json_t *doc = load_cases();
  struct tokenizer *tok = load_folder(doc, "sd2");
  pthread_t th[4];
  struct thread_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (struct thread_arg){doc, tok, 0};
    assert_int_equal(pthread_create(&th[i], NULL, thread_main, &args[i]), 0);
  }
  int bad = 0;
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    bad += args[i].bad;
  }
  assert_int_equal(bad, 0);
  tokenizer_free(tok);
  json_decref(doc);
}

static void test_cli(void **state) {
  json_t *doc = load_cases();
  json_t *c0 = NULL, *c;
  size_t i;
  json_array_foreach(json_object_get(doc, "cases"), i, c) {
    if (strcmp(json_string_value(json_object_get(c, "text")), "a photo of a cat") == 0) c0 = c;
  }
  assert_non_null(c0);
  char want[2048] = "", *p = want;
  json_t *ref = json_object_get(json_object_get(c0, "ids"), "sd2");
  for (size_t k = 0; k < TOKENIZER_MAX_LEN; k++)
    p += sprintf(p, k ? " %lld" : "%lld", json_integer_value(json_array_get(ref, k)));
  strcat(want, "\n");

  char model[4096], got[2048] = "";
  snprintf(model, sizeof model, "%s/tests/fixtures/tiny-sd2", src_dir());
  FILE *f = tmpfile();
  assert_non_null(f);
  char *err = NULL;
  assert_int_equal(tokenizer_cli_print(model, "a photo of a cat", f, &err), 0);
  rewind(f);
  assert_non_null(fgets(got, sizeof got, f));
  fclose(f);
  assert_string_equal(got, want);

  assert_true(tokenizer_cli_print("/nonexistent", "x", stdout, &err) < 0);
  assert_non_null(err);
  free(err);
  json_decref(doc);
}

static void test_invalid_utf8(void **state) {
  json_t *doc = load_cases();
  struct tokenizer *tok = load_folder(doc, "sd1");
  int32_t ids[TOKENIZER_MAX_LEN];
  const char *bad[] = {"\xff", "abc\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char *err = NULL;
    assert_int_equal(tokenizer_encode(tok, bad[i], ids, NULL, &err), -EINVAL);
    assert_non_null(err);
    free(err);
  }
  tokenizer_free(tok);
  json_decref(doc);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sd1),
      cmocka_unit_test(test_sd2),
      cmocka_unit_test(test_sd1_hub),
      cmocka_unit_test(test_sd2_hub),
      cmocka_unit_test(test_sd2_tokenizer_json),
      cmocka_unit_test(test_pad_ids),
      cmocka_unit_test(test_threads),
      cmocka_unit_test(test_cli),
      cmocka_unit_test(test_invalid_utf8),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
