/* test_soup_util.h: fixtures for the soup engine tests (header-only, static).
 *
 * A small "UNet": tensors of assorted shapes whose base is stored in F16, BF16
 * and F32; shards are the base plus noise, each shard written in one dtype to
 * a real safetensors file (st_write) and read back with st_open. Values are
 * deterministic (splitmix64 + Box-Muller).
 */
#pragma once

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/formats/safetensors.h"
#include "server/soup/soup.h"

#define TS_N 6
static const char *const ts_names[TS_N] = {"down.0.conv.weight",   "down.0.conv.bias",
                                           "mid.attn.to_q.weight", "mid.norm.weight",
                                           "up.0.zero.bias",       "conv_out.weight"};
static const int ts_ndim[TS_N] = {4, 1, 2, 1, 1, 4};
static const int64_t ts_shape[TS_N][4] = {{8, 4, 3, 3}, {37}, {24, 16}, {16}, {5}, {4, 8, 3, 3}};
static const enum st_dtype ts_base_dt[TS_N] = {ST_F16, ST_BF16, ST_F32, ST_F32, ST_F16, ST_F16};
static const double ts_scale[TS_N] = {0.2, 0.01, 3.0, 1.0, 0.0, 0.05};

static uint64_t ts_rng = 1;
static inline uint64_t ts_rnd(void) {
  uint64_t z = (ts_rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static inline double ts_gauss(void) {
  double u = ((double)(ts_rnd() >> 11) + 0.5) / 0x1p53, v = (double)(ts_rnd() >> 11) / 0x1p53;
  return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}
static inline int64_t ts_numel(int i) {
  int64_t n = 1;
  for (int d = 0; d < ts_ndim[i]; d++) n *= ts_shape[i][d];
  return n;
}

/* Host tensors in memory, one dtype per tensor. */
struct ts_model {
  enum st_dtype dt[TS_N];
  void *data[TS_N];
  double *val[TS_N]; /* the exact stored values as doubles */
};

static inline void ts_store(struct ts_model *m, int i, int64_t k, double x) {
  if (m->dt[i] == ST_F32) {
    ((float *)m->data[i])[k] = (float)x;
    m->val[i][k] = (float)x;
  } else if (m->dt[i] == ST_F16) {
    uint16_t h = f32_to_f16((float)x);
    ((uint16_t *)m->data[i])[k] = h;
    m->val[i][k] = f16_to_f32(h);
  } else {
    uint16_t b = f32_to_bf16((float)x);
    ((uint16_t *)m->data[i])[k] = b;
    m->val[i][k] = bf16_to_f32(b);
  }
}

static inline void ts_alloc(struct ts_model *m, const enum st_dtype *dts) {
  for (int i = 0; i < TS_N; i++) {
    m->dt[i] = dts[i];
    m->data[i] = calloc((size_t)ts_numel(i), st_dtype_size(dts[i]));
    m->val[i] = calloc((size_t)ts_numel(i), sizeof(double));
  }
}

static inline void ts_free(struct ts_model *m) {
  for (int i = 0; i < TS_N; i++) {
    free(m->data[i]);
    free(m->val[i]);
  }
}

static inline void ts_make_base(struct ts_model *m, uint64_t seed) {
  ts_rng = seed;
  ts_alloc(m, ts_base_dt);
  for (int i = 0; i < TS_N; i++)
    for (int64_t k = 0; k < ts_numel(i); k++) ts_store(m, i, k, ts_scale[i] * ts_gauss());
}

/* base + noise (relative 5%; the all-zero tensor gets small absolute noise). */
static inline void ts_make_shard(struct ts_model *m, const struct ts_model *base, enum st_dtype dt,
                                 uint64_t seed) {
  enum st_dtype dts[TS_N];
  for (int i = 0; i < TS_N; i++) dts[i] = dt;
  ts_rng = seed;
  ts_alloc(m, dts);
  for (int i = 0; i < TS_N; i++)
    for (int64_t k = 0; k < ts_numel(i); k++) {
      double s = ts_scale[i] > 0 ? ts_scale[i] * 0.05 : 1e-4;
      ts_store(m, i, k, base->val[i][k] + s * ts_gauss());
    }
}

static inline void ts_views(const struct ts_model *m, struct soup_view *v) {
  for (int i = 0; i < TS_N; i++) {
    memset(&v[i], 0, sizeof v[i]);
    v[i].name = ts_names[i];
    v[i].dtype = m->dt[i];
    v[i].ndim = ts_ndim[i];
    for (int d = 0; d < ts_ndim[i]; d++) v[i].shape[d] = ts_shape[i][d];
    v[i].data = m->data[i];
  }
}

/* Writes m to a temporary safetensors file and opens it. */
static inline struct st_file *ts_write_open(const struct ts_model *m, char *path_out /* [64] */) {
  struct st_write_tensor w[TS_N];
  for (int i = 0; i < TS_N; i++) {
    w[i].name = ts_names[i];
    w[i].dtype = m->dt[i];
    w[i].ndim = ts_ndim[i];
    w[i].shape = ts_shape[i];
    w[i].data = m->data[i];
  }
  snprintf(path_out, 64, "/tmp/test_soup_XXXXXX");
  int fd = mkstemp(path_out);
  if (fd < 0) return NULL;
  close(fd);
  char *err = NULL;
  struct st_file *f = NULL;
  if (st_write(path_out, w, TS_N, NULL, &err) || st_open(path_out, &f, &err)) {
    fprintf(stderr, "ts_write_open: %s\n", err ? err : "?");
    free(err);
    return NULL;
  }
  return f;
}

/* Byte equality of two live versions' materialized tensors. */
static inline int ts_versions_equal(const struct soup_version *a, const struct soup_version *b) {
  if (a->n_tensors != b->n_tensors || a->dtype != b->dtype) return 0;
  for (size_t i = 0; i < a->n_tensors; i++)
    if (a->tensors[i].numel != b->tensors[i].numel ||
        memcmp(a->tensors[i].data, b->tensors[i].data,
               (size_t)a->tensors[i].numel * dtype_size(a->dtype)) != 0)
      return 0;
  return 1;
}

static inline int ts_name_index(const char *name) {
  for (int i = 0; i < TS_N; i++)
    if (strcmp(ts_names[i], name) == 0) return i;
  return -1;
}
