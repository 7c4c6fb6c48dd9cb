/* fuzz_safetensors.c: libFuzzer target for the strict safetensors reader
 * (reliability.md test list item 3; the reference fuzzes tensor.rs the same
 * way). Built with clang -fsanitize=fuzzer,address,undefined.
 *
 * For every input: st_parse must not crash or read outside the input; when
 * it accepts, every tensor lies inside the input, is found by name, the
 * NaN/Inf scan stays inside it, the file is compatible with itself exactly
 * when all its dtypes are F32/F16/BF16, and serialize -> parse gives back
 * the same names, dtypes, shapes, bytes and
 * metadata. Any broken invariant aborts (a crash for libFuzzer).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/formats/safetensors.h"
#include "tests/fuzz/fuzz_check.h"

static size_t nbytes(const struct st_tensor *t) {
  return (size_t)(t->end - t->begin);
}

/* serialize -> parse: the same tensors and metadata come back */
static void round_trip(const struct st_file *f) {
  struct st_write_tensor *w = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *w);
  CHECK(w);
  for (size_t i = 0; i < f->n_tensors; i++) {
    const struct st_tensor *t = &f->tensors[i];
    w[i] = (struct st_write_tensor){t->name, t->dtype, t->ndim, t->shape, t->data};
  }
  char *mem = NULL, *err = NULL;
  size_t len = 0;
  FILE *fp = open_memstream(&mem, &len);
  CHECK(fp);
  int rc = st_write_fp(fp, w, f->n_tensors, f->metadata, &err);
  fclose(fp);
  if (rc == 0) {
    struct st_file *g = NULL;
    char *err2 = NULL;
    int rc2 = st_parse((const uint8_t *)mem, len, &g, &err2);
    if (rc2 != 0) fprintf(stderr, "re-parse failed: %s\n", err2 ? err2 : "?");
    CHECK(rc2 == 0);
    CHECK(g->header_len % 8 == 0);
    CHECK(g->n_tensors == f->n_tensors);
    for (size_t i = 0; i < f->n_tensors; i++) {
      const struct st_tensor *a = &f->tensors[i], *b = &g->tensors[i];
      CHECK(strcmp(a->name, b->name) == 0);
      CHECK(a->dtype == b->dtype && a->ndim == b->ndim && a->numel == b->numel);
      CHECK(memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) == 0);
      CHECK(nbytes(a) == nbytes(b));
      CHECK(nbytes(a) == 0 || memcmp(a->data, b->data, nbytes(a)) == 0);
    }
    CHECK(!f->metadata == !g->metadata);
    CHECK(!f->metadata || json_equal(f->metadata, g->metadata));
    st_close(g);
    free(err2);
  } else {
    /* the writer refuses only what cannot be written back: a header over the cap */
    CHECK(rc == ST_E_ARG && f->header_len + 8 > ST_MAX_HEADER_SIZE);
  }
  free(err);
  free(mem);
  free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct st_file *f = NULL;
  char *err = NULL;
  int rc = st_parse(data, size, &f, &err);
  if (rc != 0) {
    CHECK(rc < 0 && f == NULL && err && err[0]);
    /* messages stay valid UTF-8 so the HTTP layer can put them in JSON */
    json_t *s = json_string(err);
    CHECK(s);
    json_decref(s);
    free(err);
    return 0;
  }
  CHECK(f && !err);
  const uint8_t *end = data + size;
  uint64_t total = 0;
  int all_float = 1;
  for (size_t i = 0; i < f->n_tensors; i++) {
    const struct st_tensor *t = &f->tensors[i];
    CHECK(st_find(f, t->name) == t);
    CHECK(t->end >= t->begin);
    CHECK((const uint8_t *)t->data >= data + 8 + f->header_len);
    CHECK((const uint8_t *)t->data + nbytes(t) <= end);
    CHECK(nbytes(t) == t->numel * st_dtype_size(t->dtype));
    if (nbytes(t)) { /* touch both ends: ASan catches a bad pointer */
      volatile uint8_t x = ((const uint8_t *)t->data)[0];
      x ^= ((const uint8_t *)t->data)[nbytes(t) - 1];
      (void)x;
    }
    total += nbytes(t);
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16) all_float = 0;
  }
  CHECK(8 + f->header_len + total == size); /* tiling: no gap, no overlap, no tail */
  json_t *errors = json_array();
  int c = st_check_compatible(f, f, errors, 4);
  CHECK(c == (all_float ? 0 : -1));
  CHECK(json_array_size(errors) <= 4);
  json_array_clear(errors);
  CHECK(st_check_finite(f, errors, 4) <= 0); /* reads every float byte */
  CHECK(json_array_size(errors) <= 4);
  json_decref(errors);
  round_trip(f);
  st_close(f);
  return 0;
}
