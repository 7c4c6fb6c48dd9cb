/* test_formats_safetensors.c: the strict safetensors reader, the writer and
 * the shard compatibility check.
 *
 * Bad files are built in memory from a header string (reliability.md test
 * list items 1-2; anchors: huggingface/safetensors tensor.rs, sd.cpp #1876,
 * fastllm #712, mlx #3363, imp #1603, openasr #73); each must fail with the
 * expected status class and a message naming the tensor. Good files come from
 * the same builder and from the reference writer (python safetensors, seed
 * corpus tests/fuzz/corpus/small.safetensors), whose values are recomputed
 * here from the formulas of tests/fuzz/make_corpus.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/formats/safetensors.h"

/* ---- building files in memory ---- */

/* le64(n) || hdr[hdr_len] || data_len bytes (byte i of the data = i & 0xff). */
static uint8_t *build(uint64_t n, const char *hdr, size_t hdr_len, size_t data_len, size_t *len) {
  *len = 8 + hdr_len + data_len;
  uint8_t *b = malloc(*len ? *len : 1);
  assert_non_null(b);
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(n >> (8 * i));
  memcpy(b + 8, hdr, hdr_len);
  for (size_t i = 0; i < data_len; i++) b[8 + hdr_len + i] = (uint8_t)i;
  return b;
}

/* Header counted exactly. */
static uint8_t *build_h(const char *hdr, size_t data_len, size_t *len) {
  return build(strlen(hdr), hdr, strlen(hdr), data_len, len);
}

/* ---- bad cases, table-driven ---- */

struct bad_case {
  const char *what;
  const char *hdr;
  size_t data_len;
  int expect;          /* status class */
  const char *mention; /* substring the message must contain, or NULL */
};

#define T1(name, shape, off)                                                                       \
  "\"" name "\":{\"dtype\":\"F32\",\"shape\":" shape ",\"data_offsets\":" off "}"

static const struct bad_case bad_cases[] = {
    {"not JSON", "{abc", 0, ST_E_JSON, "JSON"},
    {"truncated JSON", "{\"a\":{\"dtype\":\"F32\",", 0, ST_E_JSON, "JSON"},
    {"not an object (array)", "[]", 0, ST_E_JSON, NULL},
    {"not an object (string)", "\"x\"", 0, ST_E_JSON, NULL},
    {"leading space", " {}", 0, ST_E_JSON, NULL},
    {"empty header", "", 0, ST_E_JSON, NULL},
    {"invalid UTF-8 byte", "{\"a\xff\":{}}", 0, ST_E_UTF8, "UTF-8"},
    {"overlong UTF-8", "{\"a\xc0\xaf\":{}}", 0, ST_E_UTF8, "UTF-8"},
    {"UTF-8 surrogate", "{\"a\xed\xa0\x80\":{}}", 0, ST_E_UTF8, "UTF-8"},
    {"truncated UTF-8", "{\"a\":{}}\xe2\x82", 0, ST_E_UTF8, "UTF-8"},
    {"trailing garbage after JSON", "{} x", 0, ST_E_JSON, NULL},
    {"escaped NUL in name", "{\"a\\u0000b\":{}}", 0, ST_E_JSON, NULL},
    {"entry not an object", "{\"w\":5}", 0, ST_E_ENTRY, "'w'"},
    {"unknown dtype", "{\"w\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     ST_E_ENTRY, "'w'"},
    {"lower-case dtype", "{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     ST_E_ENTRY, "f32"},
    {"dtype not a string", "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     ST_E_ENTRY, "'w'"},
    {"missing dtype", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, ST_E_ENTRY, "dtype"},
    {"missing shape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, ST_E_ENTRY, "shape"},
    {"missing data_offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, ST_E_ENTRY,
     "data_offsets"},
    {"extra field",
     "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"offsets\":[0,4]}}", 4,
     ST_E_ENTRY, "offsets"},
    {"negative dimension", "{" T1("w", "[-1,4]", "[0,0]") "}", 0, ST_E_ENTRY, "'w'"},
    {"non-integer dimension", "{" T1("w", "[2.5]", "[0,10]") "}", 10, ST_E_ENTRY, "'w'"},
    {"integral real dimension", "{" T1("w", "[1.0]", "[0,4]") "}", 4, ST_E_ENTRY, "'w'"},
    {"string dimension", "{" T1("w", "[\"1\"]", "[0,4]") "}", 4, ST_E_ENTRY, "'w'"},
    {"shape not an array", "{" T1("w", "4", "[0,16]") "}", 16, ST_E_ENTRY, "'w'"},
    {"rank above the limit", "{" T1("w", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", 4, ST_E_ENTRY, "'w'"},
    {"dimension above int64", "{" T1("w", "[18446744073709551615]", "[0,4]") "}", 4, ST_E_JSON,
     NULL},
    {"numel overflow [2^32, 2^32] (sd.cpp #1876)",
     "{" T1("w", "[4294967296,4294967296]", "[0,0]") "}", 0, ST_E_OVERFLOW, "'w'"},
    {"numel overflow then zero", "{" T1("w", "[4294967296,4294967296,0]", "[0,0]") "}", 0,
     ST_E_OVERFLOW, "'w'"},
    {"byte size overflow [2^62] F32", "{" T1("w", "[4611686018427387904]", "[0,0]") "}", 0,
     ST_E_OVERFLOW, "'w'"},
    {"byte size wraps to 0 [2^62, 4] F32 (would pass an unchecked size check)",
     "{" T1("w", "[4611686018427387904,4]", "[0,0]") "}", 0, ST_E_OVERFLOW, "'w'"},
    {"data_offsets not an array", "{" T1("w", "[1]", "4") "}", 4, ST_E_ENTRY, "'w'"},
    {"data_offsets of 3", "{" T1("w", "[1]", "[0,4,8]") "}", 4, ST_E_ENTRY, "'w'"},
    {"data_offsets of 1", "{" T1("w", "[1]", "[4]") "}", 4, ST_E_ENTRY, "'w'"},
    {"negative offset", "{" T1("w", "[1]", "[-4,0]") "}", 4, ST_E_ENTRY, "'w'"},
    {"real offset", "{" T1("w", "[1]", "[0,4.0]") "}", 4, ST_E_ENTRY, "'w'"},
    {"begin > end (sd.cpp PR #1754)", "{" T1("w", "[1]", "[8,4]") "}", 8, ST_E_OFFSET, "'w'"},
    {"begin > end, empty claimed", "{" T1("w", "[0]", "[4,0]") "}", 4, ST_E_OFFSET, "'w'"},
    {"first tensor not at 0", "{" T1("w", "[1]", "[4,8]") "}", 8, ST_E_OFFSET, "'w'"},
    {"gap between tensors", "{" T1("a", "[1]", "[0,4]") "," T1("b", "[1]", "[8,12]") "}", 12,
     ST_E_OFFSET, "'b'"},
    {"overlap", "{" T1("a", "[2]", "[0,8]") "," T1("b", "[2]", "[4,12]") "}", 12, ST_E_OFFSET,
     "'b'"},
    {"aliased tensors (same range)", "{" T1("a", "[1]", "[0,4]") "," T1("b", "[1]", "[0,4]") "}", 4,
     ST_E_OFFSET, "'b'"},
    {"nested tensor inside another", "{" T1("a", "[4]", "[0,16]") "," T1("b", "[1]", "[4,8]") "}",
     16, ST_E_OFFSET, NULL},
    {"offsets past EOF (mlx #3363)", "{" T1("w", "[4]", "[0,16]") "}", 8, ST_E_INCOMPLETE, "bytes"},
    {"offsets far past EOF", "{" T1("w", "[268435456]", "[0,1073741824]") "}", 8, ST_E_INCOMPLETE,
     NULL},
    {"trailing bytes", "{" T1("w", "[1]", "[0,4]") "}", 8, ST_E_INCOMPLETE, "trailing"},
    {"data but no tensors", "{}", 4, ST_E_INCOMPLETE, "trailing"},
    {"span larger than shape x dtype (fastllm #712)", "{" T1("w", "[2]", "[0,12]") "}", 12,
     ST_E_SPAN, "'w'"},
    {"span smaller than shape x dtype", "{" T1("w", "[2,2]", "[0,4]") "}", 4, ST_E_SPAN, "'w'"},
    {"rank-0 with empty span", "{" T1("w", "[]", "[0,0]") "}", 0, ST_E_SPAN, "'w'"},
    {"F64 span as F32", "{\"w\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     ST_E_SPAN, "'w'"},
    {"duplicate tensor name", "{" T1("w", "[1]", "[0,4]") "," T1("w", "[1]", "[4,8]") "}", 8,
     ST_E_JSON, "duplicate"},
    {"duplicate field in an entry",
     "{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     ST_E_JSON, "duplicate"},
    {"duplicate __metadata__", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, ST_E_JSON,
     "duplicate"},
    {"non-string metadata value", "{\"__metadata__\":{\"k\":1}}", 0, ST_E_ENTRY, "'k'"},
    {"nested metadata value", "{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", 0, ST_E_ENTRY, "'k'"},
    {"null metadata value", "{\"__metadata__\":{\"k\":null}}", 0, ST_E_ENTRY, "'k'"},
    {"metadata not an object", "{\"__metadata__\":[\"a\"]}", 0, ST_E_ENTRY, "__metadata__"},
    {"offset above int64", "{" T1("w", "[1]", "[0,18446744073709551615]") "}", 4, ST_E_JSON, NULL},
};

static void test_bad_cases(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
    const struct bad_case *c = &bad_cases[i];
    size_t len;
    uint8_t *buf = build_h(c->hdr, c->data_len, &len);
    struct st_file *f = (struct st_file *)0x1;
    char *err = NULL;
    int rc = st_parse(buf, len, &f, &err);
    if (rc != c->expect || !err || !err[0] || (c->mention && !strstr(err, c->mention)))
      fail_msg("case '%s': rc %d (want %d), message '%s' (must mention '%s')", c->what, rc,
               c->expect, err ? err : "(null)", c->mention ? c->mention : "");
    assert_null(f);
    json_t *js = json_string(err); /* valid UTF-8: fit for a problem+json body */
    if (!js) fail_msg("case '%s': message is not valid UTF-8", c->what);
    json_decref(js);
    free(err);
    free(buf);
  }
}

/* Item 1: truncated or oversized headers; nothing sized from the claimed N. */
static size_t g_json_live, g_json_peak;
static void *count_malloc(size_t n) {
  size_t *p = malloc(n + sizeof(size_t) * 2);
  if (!p) return NULL;
  p[0] = n;
  g_json_live += n;
  if (g_json_live > g_json_peak) g_json_peak = g_json_live;
  return p + 2;
}
static void count_free(void *q) {
  if (!q) return;
  size_t *p = (size_t *)q - 2;
  g_json_live -= p[0];
  free(p);
}

static void expect_fail(const uint8_t *buf, size_t len, int want, const char *what) {
  struct st_file *f = NULL;
  char *err = NULL;
  int rc = st_parse(buf, len, &f, &err);
  if (rc != want || !err || !err[0])
    fail_msg("%s: rc %d (want %d), message '%s'", what, rc, want, err ? err : "(null)");
  assert_null(f);
  free(err);
}

static int restore_json_alloc(void **state) {
  (void)state;
  json_set_alloc_funcs(malloc, free);
  return 0;
}

static void test_header_length(void **state) {
  (void)state;
  uint8_t small[8] = {2, 0, 0, 0, 0, 0, 0, 0};
  expect_fail(small, 0, ST_E_TOO_SMALL, "empty file");
  expect_fail(small, 7, ST_E_TOO_SMALL, "7-byte file");
  expect_fail(small, 8, ST_E_HEADER_LEN, "N = 2 but no header bytes");

  json_set_alloc_funcs(count_malloc, count_free);
  g_json_peak = 0;
  size_t len;
  uint8_t *b = build(100, "{}", 2, 0, &len);
  expect_fail(b, len, ST_E_HEADER_LEN, "N > file");
  free(b);
  b = build(ST_MAX_HEADER_SIZE + 1, "{}", 2, 0, &len);
  expect_fail(b, len, ST_E_HEADER_SIZE, "N > cap");
  free(b);
  b = build(ST_MAX_HEADER_SIZE, "{}", 2, 0, &len);
  expect_fail(b, len, ST_E_HEADER_LEN, "N = cap > file");
  free(b);
  b = build(UINT64_MAX, "{}", 2, 0, &len);
  expect_fail(b, len, ST_E_HEADER_SIZE, "N = 2^64-1");
  free(b);
  b = build(UINT64_MAX - 7, "{}", 2, 0, &len);
  expect_fail(b, len, ST_E_HEADER_SIZE, "N = 2^64-8 (N + 8 wraps to 0)");
  free(b);
  b = build(3, "{}", 2, 0, &len); /* N one past the file */
  expect_fail(b, len, ST_E_HEADER_LEN, "N = file + 1");
  free(b);
  /* no JSON was even parsed for a lying length */
  assert_int_equal(g_json_peak, 0);

  /* a server-chosen lower cap */
  const char *h20 = "{" T1("w", "[1]", "[0,4]") "}"; /* 54 bytes */
  b = build_h(h20, 4, &len);
  struct st_file *g = NULL;
  char *e = NULL;
  assert_int_equal(st_parse_limit(b, len, 53, &g, &e), ST_E_HEADER_SIZE);
  assert_non_null(strstr(e, "53"));
  free(e);
  assert_int_equal(st_parse_limit(b, len, 54, &g, &e), 0);
  st_close(g);
  free(b);

  /* a small real header costs a small, bounded amount */
  b = build_h("{" T1("w", "[1]", "[0,4]") "}", 4, &len);
  struct st_file *f = NULL;
  char *err = NULL;
  assert_int_equal(st_parse(b, len, &f, &err), 0);
  st_close(f);
  free(b);
  json_set_alloc_funcs(malloc, free);
  assert_true(g_json_peak > 0 && g_json_peak < 4096);
}

/* ---- good cases ---- */

static struct st_file *parse_ok(const uint8_t *buf, size_t len) {
  struct st_file *f = NULL;
  char *err = NULL;
  int rc = st_parse(buf, len, &f, &err);
  if (rc != 0) fail_msg("unexpected failure %d: %s", rc, err ? err : "(null)");
  assert_non_null(f);
  return f;
}

static void test_good_cases(void **state) {
  (void)state;
  size_t len;
  /* rank-0, empty tensors (two at the same offset, one at the end), tensors
   * listed out of offset order, metadata, header padded with spaces */
  const char *hdr = "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"\xc3\xa9t\xc3\xa9\"},"
                    "\"z\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[4,12]},"
                    "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                    "\"e1\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                    "\"e2\":{\"dtype\":\"BF16\",\"shape\":[3,0,2],\"data_offsets\":[4,4]},"
                    "\"e3\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[12,12]}}      ";
  uint8_t *b = build_h(hdr, 12, &len);
  struct st_file *f = parse_ok(b, len);
  assert_int_equal(f->n_tensors, 5);
  assert_int_equal(f->header_len, strlen(hdr));
  for (size_t i = 1; i < f->n_tensors; i++)
    assert_true(strcmp(f->tensors[i - 1].name, f->tensors[i].name) < 0);
  const struct st_tensor *s = st_find(f, "s");
  assert_non_null(s);
  assert_int_equal(s->ndim, 0);
  assert_int_equal(s->numel, 1);
  assert_ptr_equal(s->data, b + 8 + strlen(hdr));
  const struct st_tensor *z = st_find(f, "z");
  assert_non_null(z);
  assert_int_equal(z->dtype, ST_F16);
  assert_int_equal(z->ndim, 2);
  assert_int_equal(z->shape[0], 2);
  assert_int_equal(z->begin, 4);
  assert_int_equal(z->end, 12);
  assert_int_equal(z->numel, 4);
  assert_ptr_equal(z->data, b + 8 + strlen(hdr) + 4);
  assert_int_equal(((const uint8_t *)z->data)[0], 4); /* data byte i == i */
  const struct st_tensor *e2 = st_find(f, "e2");
  assert_non_null(e2);
  assert_int_equal(e2->numel, 0);
  assert_int_equal(e2->ndim, 3);
  assert_null(st_find(f, "__metadata__"));
  assert_null(st_find(f, "missing"));
  assert_null(st_find(f, ""));
  assert_non_null(f->metadata);
  assert_string_equal(json_string_value(json_object_get(f->metadata, "format")), "pt");
  st_close(f);
  free(b);

  /* no tensors at all */
  b = build_h("{}", 0, &len);
  f = parse_ok(b, len);
  assert_int_equal(f->n_tensors, 0);
  assert_null(f->metadata);
  assert_null(st_find(f, "x"));
  st_close(f);
  free(b);

  /* every dtype with its size: one element each, contiguous */
  static const struct {
    const char *name;
    size_t size;
  } dts[] = {{"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
             {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
             {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8}};
  char big[4096];
  size_t o = 0, off = 0;
  o += (size_t)snprintf(big + o, sizeof big - o, "{");
  for (size_t i = 0; i < sizeof dts / sizeof dts[0]; i++) {
    o +=
        (size_t)snprintf(big + o, sizeof big - o,
                         "%s\"t%02zu\":{\"dtype\":\"%s\",\"shape\":[1],\"data_offsets\":[%zu,%zu]}",
                         i ? "," : "", i, dts[i].name, off, off + dts[i].size);
    off += dts[i].size;
  }
  snprintf(big + o, sizeof big - o, "}");
  b = build_h(big, off, &len);
  f = parse_ok(b, len);
  assert_int_equal(f->n_tensors, ST_DTYPE_COUNT);
  for (size_t i = 0; i < f->n_tensors; i++) {
    const struct st_tensor *t = &f->tensors[i];
    assert_string_equal(st_dtype_name(t->dtype), dts[i].name); /* t00..t14 sorted */
    assert_int_equal(st_dtype_size(t->dtype), dts[i].size);
  }
  st_close(f);
  free(b);
  assert_int_equal(st_dtype_to_dtype(ST_F32), DT_F32);
  assert_int_equal(st_dtype_to_dtype(ST_BF16), DT_BF16);
  assert_int_equal(st_dtype_to_dtype(ST_I64), DT_I64);
  assert_int_equal(st_dtype_to_dtype(ST_U8), -1);
}

/* A file written by the reference writer: values recomputed from the
 * formulas of tests/fuzz/make_corpus.py. */
static void test_reference_file(void **state) {
  (void)state;
  char path[4096];
  snprintf(path, sizeof path, "%s/tests/fuzz/corpus/small.safetensors", SOUPD_SOURCE_DIR);
  struct st_file *f = NULL;
  char *err = NULL;
  int rc = st_open(path, &f, &err);
  if (rc) fail_msg("st_open: %s", err);
  assert_int_equal(f->mapped, 1);
  assert_int_equal(f->n_tensors, 5);
  assert_int_equal(f->header_len % 8, 0);
  const struct st_tensor *a = st_find(f, "a");
  assert_non_null(a);
  assert_int_equal(a->dtype, ST_F32);
  assert_int_equal(a->ndim, 2);
  assert_int_equal(a->shape[0], 2);
  assert_int_equal(a->shape[1], 3);
  for (int i = 0; i < 6; i++) {
    float v;
    memcpy(&v, (const uint8_t *)a->data + 4 * i, 4);
    assert_true(v == (float)i);
  }
  const struct st_tensor *bt = st_find(f, "b"), *ct = st_find(f, "c");
  const double bv[3] = {1.5, -2.0, 0.25}, cv[3] = {1.0, -0.5, 3.0};
  for (int i = 0; i < 3; i++) {
    uint16_t h;
    memcpy(&h, (const uint8_t *)bt->data + 2 * i, 2);
    assert_true(f16_to_f32(h) == bv[i]);
    memcpy(&h, (const uint8_t *)ct->data + 2 * i, 2);
    assert_true(bf16_to_f32(h) == cv[i]);
  }
  const struct st_tensor *sc = st_find(f, "scalar");
  assert_int_equal(sc->ndim, 0);
  int64_t sv;
  memcpy(&sv, sc->data, 8);
  assert_int_equal(sv, 7);
  assert_int_equal(st_find(f, "empty")->numel, 0);
  assert_string_equal(json_string_value(json_object_get(f->metadata, "format")), "pt");
  st_close(f);
  assert_int_equal(st_open_limit(path, 64, &f, &err), ST_E_HEADER_SIZE);
  assert_null(f);
  free(err);

  /* st_open errors never show the server path */
  char dir[] = "/tmp/soupd_st_XXXXXX";
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/bad.safetensors", dir);
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  fwrite("\xff\xff\xff\xff\xff\xff\xff\xff{}", 1, 10, fp);
  fclose(fp);
  rc = st_open(path, &f, &err);
  assert_int_equal(rc, ST_E_HEADER_SIZE);
  assert_null(strstr(err, dir));
  free(err);
  fp = fopen(path, "wb"); /* empty file: not mappable, still a clean error */
  fclose(fp);
  rc = st_open(path, &f, &err);
  assert_int_equal(rc, ST_E_TOO_SMALL);
  free(err);
  unlink(path);
  snprintf(path, sizeof path, "%s/missing.safetensors", dir);
  rc = st_open(path, &f, &err);
  assert_int_equal(rc, ST_E_IO);
  assert_null(strstr(err, dir));
  free(err);
  rc = st_open(dir, &f, &err); /* a directory */
  assert_int_equal(rc, ST_E_IO);
  free(err);
  rmdir(dir);
}

/* ---- writer ---- */

static void test_write_round_trip(void **state) {
  (void)state;
  float a[6] = {0, 1, 2, 3, 4, 5};
  uint16_t h[4] = {f32_to_f16(1.0f), f32_to_f16(-2.0f), f32_to_f16(0.5f), f32_to_f16(65504.0f)};
  int64_t sc = -9;
  const int64_t sa[2] = {2, 3}, sh[3] = {1, 2, 2}, se[2] = {0, 5};
  const struct st_write_tensor t[] = {
      {"zeta", ST_F32, 2, sa, a},
      {"alpha", ST_F16, 3, sh, h},
      {"empty", ST_BF16, 2, se, NULL},
      {"scalar", ST_I64, 0, NULL, &sc},
  };
  json_t *meta = json_pack("{s:s}", "format", "pt");
  char dir[] = "/tmp/soupd_stw_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[512], tmp[600];
  snprintf(path, sizeof path, "%s/out.safetensors", dir);
  char *err = NULL;
  int rc = st_write(path, t, 4, meta, &err);
  if (rc) fail_msg("st_write: %s", err);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  assert_int_equal(access(tmp, F_OK), -1); /* renamed away */

  struct st_file *f = NULL;
  rc = st_open(path, &f, &err);
  if (rc) fail_msg("st_open: %s", err);
  assert_int_equal(f->header_len % 8, 0);
  assert_int_equal(f->size, 8 + f->header_len + 24 + 8 + 0 + 8);
  /* contiguous in the given order */
  const struct st_tensor *z = st_find(f, "zeta"), *al = st_find(f, "alpha");
  const struct st_tensor *em = st_find(f, "empty"), *s = st_find(f, "scalar");
  assert_non_null(z);
  assert_non_null(al);
  assert_non_null(em);
  assert_non_null(s);
  assert_int_equal(z->begin, 0);
  assert_int_equal(al->begin, 24);
  assert_int_equal(em->begin, 32);
  assert_int_equal(em->end, 32);
  assert_int_equal(s->begin, 32);
  assert_int_equal(al->ndim, 3);
  assert_int_equal(al->shape[2], 2);
  assert_int_equal(s->ndim, 0);
  assert_memory_equal(z->data, a, sizeof a);
  assert_memory_equal(al->data, h, sizeof h);
  assert_memory_equal(s->data, &sc, 8);
  assert_true(json_equal(f->metadata, meta));
  st_close(f);

  /* st_write_fp to a memory stream, parsed back; no metadata */
  char *mem = NULL;
  size_t memlen = 0;
  FILE *fp = open_memstream(&mem, &memlen);
  assert_int_equal(st_write_fp(fp, t, 2, NULL, &err), 0);
  fclose(fp);
  f = parse_ok((const uint8_t *)mem, memlen);
  assert_int_equal(f->n_tensors, 2);
  assert_null(f->metadata);
  assert_memory_equal(st_find(f, "zeta")->data, a, sizeof a);
  st_close(f);
  free(mem);

  /* writer refusals leave no file behind */
  const struct st_write_tensor dup[] = {{"x", ST_F32, 2, sa, a}, {"x", ST_F32, 2, sa, a}};
  const struct st_write_tensor reserved[] = {{"__metadata__", ST_F32, 2, sa, a}};
  const int64_t neg[1] = {-1};
  const struct st_write_tensor negative[] = {{"x", ST_F32, 1, neg, a}};
  json_t *badmeta = json_pack("{s:i}", "k", 1);
  snprintf(path, sizeof path, "%s/bad.safetensors", dir);
  assert_true(st_write(path, dup, 2, NULL, &err) < 0);
  assert_non_null(strstr(err, "duplicate"));
  free(err);
  assert_true(st_write(path, reserved, 1, NULL, &err) < 0);
  free(err);
  assert_true(st_write(path, negative, 1, NULL, &err) < 0);
  free(err);
  assert_true(st_write(path, t, 1, badmeta, &err) < 0);
  free(err);
  const struct st_write_tensor notutf8[] = {{"bad\xff", ST_F32, 2, sa, a}};
  assert_int_equal(st_write(path, notutf8, 1, NULL, &err), ST_E_ARG);
  json_t *js = json_string(err);
  assert_non_null(js);
  json_decref(js);
  free(err);
  assert_int_equal(access(path, F_OK), -1);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  assert_int_equal(access(tmp, F_OK), -1);
  snprintf(path, sizeof path, "%s/no/such/dir/x.safetensors", dir);
  assert_int_equal(st_write(path, t, 1, NULL, &err), ST_E_IO);
  free(err);

  snprintf(path, sizeof path, "%s/out.safetensors", dir);
  unlink(path);
  rmdir(dir);
  json_decref(meta);
  json_decref(badmeta);
}

/* ---- shard compatibility ---- */

struct mem_file {
  char *buf;
  size_t len;
  struct st_file *f;
};

static void mem_write(struct mem_file *m, const struct st_write_tensor *t, size_t n) {
  FILE *fp = open_memstream(&m->buf, &m->len);
  char *err = NULL;
  assert_int_equal(st_write_fp(fp, t, n, NULL, &err), 0);
  fclose(fp);
  m->f = parse_ok((const uint8_t *)m->buf, m->len);
}

static void mem_free(struct mem_file *m) {
  st_close(m->f);
  free(m->buf);
}

static int has_error(json_t *errors, const char *field, const char *msg_part) {
  size_t i;
  json_t *e;
  json_array_foreach(errors, i, e) {
    const char *fl = json_string_value(json_object_get(e, "field"));
    const char *m = json_string_value(json_object_get(e, "message"));
    if (fl && m && strcmp(fl, field) == 0 && strstr(m, msg_part)) return 1;
  }
  return 0;
}

static void test_check_compatible(void **state) {
  (void)state;
  static uint8_t zeros[64];
  const int64_t s23[2] = {2, 3}, s32[2] = {3, 2}, s4[1] = {4}, s6[1] = {6};
  const struct st_write_tensor base_t[] = {
      {"a", ST_F32, 2, s23, zeros}, {"b", ST_F32, 1, s4, zeros}, {"c", ST_F32, 1, s4, zeros}};
  struct mem_file base = {0}, same = {0}, bad = {0}, many = {0};
  mem_write(&base, base_t, 3);

  /* same names and shapes, half-precision dtypes: compatible */
  const struct st_write_tensor same_t[] = {
      {"c", ST_BF16, 1, s4, zeros}, {"a", ST_F16, 2, s23, zeros}, {"b", ST_F32, 1, s4, zeros}};
  mem_write(&same, same_t, 3);
  json_t *errors = json_array();
  assert_int_equal(st_check_compatible(base.f, same.f, errors, 10), 0);
  assert_int_equal(json_array_size(errors), 0);
  assert_int_equal(st_check_compatible(base.f, base.f, errors, 10), 0);

  /* a: wrong shape; b: wrong dtype; c: missing; d: extra */
  const struct st_write_tensor bad_t[] = {
      {"a", ST_F32, 2, s32, zeros}, {"b", ST_I32, 1, s4, zeros}, {"d", ST_F32, 1, s4, zeros}};
  mem_write(&bad, bad_t, 3);
  assert_int_equal(st_check_compatible(base.f, bad.f, errors, 10), -1);
  assert_int_equal(json_array_size(errors), 4);
  assert_true(has_error(errors, "a", "[3, 2]"));
  assert_true(has_error(errors, "b", "I32"));
  assert_true(has_error(errors, "c", "missing"));
  assert_true(has_error(errors, "d", "not in the base"));
  json_array_clear(errors);

  /* rank differs with the same numel */
  const struct st_write_tensor many_t[] = {
      {"a", ST_F32, 1, s6, zeros}, {"x", ST_F32, 1, s4, zeros}, {"y", ST_F32, 1, s4, zeros}};
  mem_write(&many, many_t, 3);
  /* only the first max_errors are reported, the result is still -1 */
  assert_int_equal(st_check_compatible(base.f, many.f, errors, 2), -1);
  assert_int_equal(json_array_size(errors), 2);
  json_array_clear(errors);
  assert_int_equal(st_check_compatible(base.f, many.f, errors, 0), -1);
  assert_int_equal(json_array_size(errors), 0);
  assert_int_equal(st_check_compatible(base.f, many.f, NULL, 5), -1);
  assert_int_equal(st_check_compatible(base.f, many.f, errors, 100), -1);
  assert_true(has_error(errors, "a", "[6]"));
  assert_true(has_error(errors, "b", "missing"));
  assert_true(has_error(errors, "x", "not in the base"));

  json_decref(errors);
  mem_free(&base);
  mem_free(&same);
  mem_free(&bad);
  mem_free(&many);
}

/* NaN/Inf scan against isfinite() of the values converted by tensor.h. */
static void test_check_finite(void **state) {
  (void)state;
  float f32[5] = {0.0f, -1.0f, 3.0e38f, 1e-45f, 2.0f};
  uint16_t f16[4] = {f32_to_f16(1.0f), 0x7bff /* 65504 */, 0x0001, f32_to_f16(-2.0f)};
  uint16_t bf[3] = {f32_to_bf16(1.0f), 0x7f7f /* max */, f32_to_bf16(-0.5f)};
  int32_t ints[2] = {0x7fffffff, -1}; /* NaN bit pattern, but not a float */
  const int64_t s5[1] = {5}, s4[1] = {4}, s3[1] = {3}, s2[1] = {2};
  const struct st_write_tensor t[] = {{"f32", ST_F32, 1, s5, f32},
                                      {"f16", ST_F16, 1, s4, f16},
                                      {"bf16", ST_BF16, 1, s3, bf},
                                      {"ints", ST_I32, 1, s2, ints}};
  struct mem_file m = {0};
  mem_write(&m, t, 4);
  json_t *errors = json_array();
  assert_int_equal(st_check_finite(m.f, errors, 10), 0);
  assert_int_equal(json_array_size(errors), 0);
  mem_free(&m);

  /* poison one element of each float tensor; the reported index is the
   * first non-finite one by the independent check */
  float nan = __builtin_nanf(""), inf = __builtin_inff();
  f32[3] = -inf;
  f16[1] = 0x7e00;           /* F16 NaN */
  f16[2] = f32_to_f16(1e6f); /* overflows to +Inf */
  bf[2] = f32_to_bf16(nan);
  mem_write(&m, t, 4);
  assert_int_equal(st_check_finite(m.f, errors, 10), -1);
  assert_int_equal(json_array_size(errors), 3);
  int first_f32 = -1, first_f16 = -1, first_bf = -1;
  for (int i = 4; i >= 0; i--)
    if (!isfinite(f32[i])) first_f32 = i;
  for (int i = 3; i >= 0; i--)
    if (!isfinite(f16_to_f32(f16[i]))) first_f16 = i;
  for (int i = 2; i >= 0; i--)
    if (!isfinite(bf16_to_f32(bf[i]))) first_bf = i;
  char want[64];
  snprintf(want, sizeof want, "element %d ", first_f32);
  assert_true(has_error(errors, "f32", want));
  snprintf(want, sizeof want, "element %d ", first_f16);
  assert_true(has_error(errors, "f16", want));
  snprintf(want, sizeof want, "element %d ", first_bf);
  assert_true(has_error(errors, "bf16", want));
  json_array_clear(errors);
  assert_int_equal(st_check_finite(m.f, errors, 1), -1);
  assert_int_equal(json_array_size(errors), 1);
  json_decref(errors);
  mem_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_cases),
      cmocka_unit_test_teardown(test_header_length, restore_json_alloc),
      cmocka_unit_test(test_good_cases),
      cmocka_unit_test(test_reference_file),
      cmocka_unit_test(test_write_round_trip),
      cmocka_unit_test(test_check_compatible),
      cmocka_unit_test(test_check_finite),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
