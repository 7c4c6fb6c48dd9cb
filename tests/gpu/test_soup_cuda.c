/* test_soup_cuda.c: the soup ops on the GPU give the same bits as on the CPU.
 *
 * For random F16/BF16/F32 shards (random bit patterns: subnormals, ties,
 * both signs; sizes 1, 1000 and a few pipeline chunks plus a remainder),
 * several weights (kq > 0 and < 0, i.e. apply and withdraw) and scale
 * exponents F, soup_backend_cpu() and soup_backend_cuda() must agree on:
 * validate (result and first bad index, with a planted NaN/Inf/too-large
 * value), every accumulator (via the per-call SHA-256 digest and the hash
 * op), every materialized F32/F16/BF16 bit (fused and standalone, also from
 * random int64 accumulators over the whole range, which reaches F16/BF16
 * subnormals and overflow) and convert. Exit 77 without a CUDA device.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_test_util.h"
#include "kernels/soup_backend.h"
#ifdef SOUPD_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

static const struct soup_backend *SC, *SG;

static int d2h(void *dst, const void *src, size_t bytes) {
  if (g_selfcheck) return memcpy(dst, src, bytes), 0;
#ifdef SOUPD_HAVE_CUDA
  return cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost) == cudaSuccess ? 0 : -1;
#else
  return -1;
#endif
}
static int h2d(void *dst, const void *src, size_t bytes) {
  if (g_selfcheck) return memcpy(dst, src, bytes), 0;
#ifdef SOUPD_HAVE_CUDA
  /* the soup ops run on their own non-blocking streams: wait for the DMA */
  return cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice) == cudaSuccess &&
                 cudaDeviceSynchronize() == cudaSuccess
             ? 0
             : -1;
#else
  return -1;
#endif
}

static void expect(int ok, const char *fmt, const char *a, long long b) {
  if (!ok) {
    printf("FAIL ");
    printf(fmt, a, b);
    printf("\n");
    g_fail++;
  }
}

/* random valid source bits for dtype dt and scale exponent F */
static void rand_src(void *src, enum dtype dt, int64_t n, int F) {
  for (int64_t i = 0; i < n; i++) {
    uint64_t r = rnd_u64();
    if (dt == DT_F32) {
      /* exponent so that |w| * 2^F <= 2^30: e - 127 + F <= 29 */
      int emax = 127 + 29 - F;
      uint32_t e = (uint32_t)(r % (uint64_t)(emax > 254 ? 254 : emax));
      uint32_t u = (uint32_t)(r >> 32) & 0x807fffffu;
      ((uint32_t *)src)[i] = u | (e << 23);
    } else if (dt == DT_F16) {
      uint16_t h = (uint16_t)(r & 0xffff);
      if ((h & 0x7c00) == 0x7c00) h &= 0xbfff; /* no Inf/NaN */
      ((uint16_t *)src)[i] = h;
    } else {
      int emax = 127 + 29 - F;
      uint16_t e = (uint16_t)((r >> 16) % (uint64_t)(emax > 254 ? 254 : emax));
      ((uint16_t *)src)[i] = (uint16_t)((r & 0x807f) | (e << 7));
    }
  }
}

static int cmp_out(const void *host_cpu, const void *dev, size_t bytes, const char *what) {
  void *h = malloc(bytes ? bytes : 1);
  int rc = d2h(h, dev, bytes);
  int same = rc == 0 && memcmp(h, host_cpu, bytes) == 0;
  if (!same) {
    size_t i = 0;
    while (rc == 0 && i < bytes && ((uint8_t *)h)[i] == ((const uint8_t *)host_cpu)[i]) i++;
    printf("FAIL %s: bits differ (first byte %zu)\n", what, i);
    g_fail++;
  }
  free(h);
  return same;
}

static void test_shards(enum dtype sdt, enum dtype odt, int64_t n, int F) {
  size_t isz = dtype_size(sdt), osz = dtype_size(odt);
  char what[128];
  snprintf(what, sizeof what, "%s->%s n=%lld F=%d", dtype_name(sdt), dtype_name(odt), (long long)n,
           F);
  int64_t *acc_c = SC->alloc((size_t)n * 8), *acc_g = SG->alloc((size_t)n * 8);
  void *out_c = SC->alloc((size_t)n * osz), *out_g = SG->alloc((size_t)n * osz);
  void *src[3];
  int64_t kq[4] = {3, 7, -3, 1}; /* the third withdraws the first shard */
  int which[4] = {0, 1, 0, 2};
  for (int j = 0; j < 3; j++) {
    src[j] = malloc((size_t)n * isz);
    rand_src(src[j], sdt, n, F);
  }
  if (!acc_c || !acc_g || !out_c || !out_g) {
    printf("FAIL %s: alloc\n", what);
    g_fail++;
    goto out;
  }
  int64_t K = 0;
  for (int s = 0; s < 4; s++) {
    int64_t bc = -1, bg = -1;
    int vc = SC->validate(src[which[s]], sdt, n, F, &bc);
    int vg = SG->validate(src[which[s]], sdt, n, F, &bg);
    expect(vc == 0 && vg == 0, "%s: validate of a valid shard (step %lld)", what, s);
    K += kq[s];
    uint8_t dc[32], dg[32];
    int fused = s % 2 == 0; /* alternate fused materialize and standalone */
    int rc1 =
        SC->accumulate(acc_c, src[which[s]], sdt, n, F, kq[s], fused ? out_c : NULL, odt, K, dc);
    int rc2 =
        SG->accumulate(acc_g, src[which[s]], sdt, n, F, kq[s], fused ? out_g : NULL, odt, K, dg);
    expect(rc1 == 0 && rc2 == 0, "%s: accumulate rc (step %lld)", what, s);
    expect(memcmp(dc, dg, 32) == 0, "%s: accumulate digest differs (step %lld)", what, s);
    if (!fused) {
      rc1 = SC->materialize(out_c, odt, acc_c, n, F, K);
      rc2 = SG->materialize(out_g, odt, acc_g, n, F, K);
      expect(rc1 == 0 && rc2 == 0, "%s: materialize rc (step %lld)", what, s);
    }
    char w2[160];
    snprintf(w2, sizeof w2, "%s step %d %s", what, s, fused ? "fused" : "materialize");
    cmp_out(out_c, out_g, (size_t)n * osz, w2);
  }
  uint8_t hc[32], hg[32];
  expect(SC->hash(acc_c, n, hc) == 0 && SG->hash(acc_g, n, hg) == 0 && memcmp(hc, hg, 32) == 0,
         "%s: hash differs%lld", what, 0);
  /* convert (the base as the soup) */
  expect(SC->convert(out_c, odt, src[2], sdt, n) == 0 &&
             SG->convert(out_g, odt, src[2], sdt, n) == 0,
         "%s: convert rc%lld", what, 0);
  snprintf(what + strlen(what), sizeof what - strlen(what), " convert");
  cmp_out(out_c, out_g, (size_t)n * osz, what);
  /* validate: a bad value planted at a random index */
  if (n > 2) {
    int64_t at = (int64_t)(rnd_u64() % (uint64_t)n);
    if (sdt == DT_F32)
      ((uint32_t *)src[0])[at] = 0x7fc00000u;
    else if (sdt == DT_F16)
      ((uint16_t *)src[0])[at] = 0x7c00;
    else
      ((uint16_t *)src[0])[at] = 0x7f7f; /* finite but far too large for any F >= 0 */
    int64_t bc = -1, bg = -1;
    int vc = SC->validate(src[0], sdt, n, F, &bc), vg = SG->validate(src[0], sdt, n, F, &bg);
    expect(vc == 1 && vg == 1 && bc == bg && bc <= at, "%s: validate bad index %lld", what, bg);
  }
out:
  for (int j = 0; j < 3; j++) free(src[j]);
  SC->free(acc_c);
  SG->free(acc_g);
  SC->free(out_c);
  SG->free(out_g);
}

/* materialize from arbitrary accumulators (full int64 range used by the engine) */
static void test_materialize_range(void) {
  int64_t n = 100003;
  int64_t *acc = malloc((size_t)n * 8);
  int64_t *acc_g = SG->alloc((size_t)n * 8);
  for (int64_t i = 0; i < n; i++) {
    uint64_t r = rnd_u64();
    int sh = (int)(rnd_u64() % 63); /* magnitudes 2^0 .. 2^62 */
    int64_t v = (int64_t)(r >> (1 + sh));
    acc[i] = (r & 1) ? -v : v;
  }
  if (!acc_g || h2d(acc_g, acc, (size_t)n * 8)) {
    printf("FAIL materialize range: alloc/copy\n");
    g_fail++;
    free(acc);
    SG->free(acc_g);
    return;
  }
  enum dtype odts[3] = {DT_F32, DT_F16, DT_BF16};
  int Fs[4] = {0, 10, 24, 40};
  int64_t Ks[3] = {1, 3, 1000003};
  for (int o = 0; o < 3; o++)
    for (int f = 0; f < 4; f++)
      for (int k = 0; k < 3; k++) {
        size_t osz = dtype_size(odts[o]);
        void *oc = malloc((size_t)n * osz), *og = SG->alloc((size_t)n * osz);
        int rc1 = SC->materialize(oc, odts[o], acc, n, Fs[f], Ks[k]);
        int rc2 = SG->materialize(og, odts[o], acc_g, n, Fs[f], Ks[k]);
        char what[96];
        snprintf(what, sizeof what, "materialize %s F=%d K=%lld", dtype_name(odts[o]), Fs[f],
                 (long long)Ks[k]);
        if (rc1 || rc2) {
          printf("FAIL %s rc %d %d\n", what, rc1, rc2);
          g_fail++;
        } else if (cmp_out(oc, og, (size_t)n * osz, what)) {
          printf("ok   %s\n", what);
        }
        free(oc);
        SG->free(og);
      }
  uint8_t hc[32], hg[32];
  expect(SC->hash(acc, n, hc) == 0 && SG->hash(acc_g, n, hg) == 0 && memcmp(hc, hg, 32) == 0,
         "%s: hash of random accumulators differs%lld", "materialize range", 0);
  free(acc);
  SG->free(acc_g);
}

static const struct soup_backend *gpu_soup(void) {
  if (g_selfcheck) return soup_backend_cpu();
#ifdef SOUPD_HAVE_CUDA
  return soup_backend_cuda();
#else
  return NULL;
#endif
}

int main(void) {
  int skip = gpu_test_skip_reason();
  if (skip) return skip;
  SC = soup_backend_cpu();
  SG = gpu_soup();
  if (!SG) {
    printf("SKIP: soup_backend_cuda() is NULL (no usable device $SOUPD_CUDA_DEVICE)\n");
    return GPU_SKIP;
  }
  printf("soup: cpu vs %s\n", SG->name);
  test_materialize_range();
  enum dtype sdts[3] = {DT_F16, DT_BF16, DT_F32};
  enum dtype odts[3] = {DT_F32, DT_F16, DT_BF16};
  int64_t ns[3] = {1, 1000, (int64_t)3 * (1 << 21) + 17};
  int Fs[2] = {12, 20};
  for (int s = 0; s < 3; s++)
    for (int o = 0; o < 3; o++)
      for (int k = 0; k < 3; k++)
        for (int f = 0; f < 2; f++) {
          int before = g_fail;
          test_shards(sdts[s], odts[o], ns[k], Fs[f]);
          printf("%s shards %s -> %s n=%lld F=%d\n", g_fail == before ? "ok  " : "FAIL",
                 dtype_name(sdts[s]), dtype_name(odts[o]), (long long)ns[k], Fs[f]);
        }
  return gpu_test_exit();
}
