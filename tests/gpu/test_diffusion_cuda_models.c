/* test_diffusion_cuda_models.c: whole models on the CPU backend and the CUDA
 * backend from the same inputs (the tiny SD2 fixtures in
 * tests/fixtures/tiny-sd2): the UNet (two latent sizes, one not a multiple
 * of the downsampling factor, fractional timesteps, batch 2), the CLIP text
 * encoder (last hidden state and clip_skip 1) and the VAE decoder (and
 * encoder when the fixture has one). Each output is checked for NaN/Inf and
 * for the normalised error max|gpu-cpu| / max|cpu| <= 1e-4 (F32 math on
 * both; the bound covers the GEMM/conv summation order accumulated over the
 * network's depth). With SOUPD_CUDA_MATH=tf32|f16 the bound is 2e-2.
 * Exit 77 without a CUDA device; 1 on any failure.
 */
#include "gpu_test_util.h"

#include "diffusion/unet.h"
#if __has_include("diffusion/clip_text.h")
#include "diffusion/clip_text.h"
#define HAVE_CLIP 1
#endif
#if __has_include("diffusion/vae.h")
#include "diffusion/vae.h"
#define HAVE_VAE 1
#endif

static struct backend *C, *G;
static double TOL = 1e-4;
static char dir_unet[1024], dir_text[1024], dir_vae[1024];

/* compares two F32 tensors (one per backend) */
static void compare(const struct tensor *tc, const struct tensor *tg, const char *what) {
  int64_t n = tensor_numel(tc);
  float *hc = malloc((size_t)n * 4), *hg = malloc((size_t)n * 4);
  if (be_download_f32(C, tc, hc) || be_download_f32(G, tg, hg)) {
    printf("FAIL %s: download: %s\n", what, be_last_error(G));
    g_fail++;
  } else {
    double mx = 0, md = 0;
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++) {
      if (!isfinite(hg[i]) || !isfinite(hc[i])) bad = i;
      double a = fabs((double)hc[i]), d = fabs((double)hg[i] - (double)hc[i]);
      mx = a > mx ? a : mx;
      md = d > md ? d : md;
    }
    double err = md / (mx > 1e-30 ? mx : 1e-30);
    if (bad >= 0) {
      printf("FAIL %-40s non-finite at %lld: cpu %g gpu %g\n", what, (long long)bad,
             (double)hc[bad], (double)hg[bad]);
      g_fail++;
    } else {
      printf("%s %-40s err %.3g (bound %.1g, max|cpu| %.3g)\n", err <= TOL ? "ok  " : "FAIL", what,
             err, TOL, mx);
      if (err > TOL) g_fail++;
    }
  }
  free(hc);
  free(hg);
}

static void test_unet(void) {
  struct unet *uc = NULL, *ug = NULL;
  char *err = NULL;
  if (unet_load(dir_unet, C, &uc, &err) || unet_load(dir_unet, G, &ug, &err)) {
    printf("FAIL unet_load: %s\n", err ? err : "?");
    free(err);
    g_fail++;
    unet_free(uc);
    unet_free(ug);
    return;
  }
  int64_t sizes[2][2] = {{16, 16}, {12, 10}};
  for (int k = 0; k < 2; k++) {
    int64_t B = 2, ss[4] = {B, unet_in_channels(uc), sizes[k][0], sizes[k][1]};
    int64_t cs[3] = {B, 77, unet_cross_attention_dim(uc)};
    int64_t os[4] = {B, unet_out_channels(uc), sizes[k][0], sizes[k][1]};
    float ts[2] = {999.0f, 10.5f};
    struct pair s, ctx;
    struct tensor oc, og;
    if (rand_both(C, G, &s, DT_F32, 4, ss, 1.5f) || rand_both(C, G, &ctx, DT_F32, 3, cs, 1.0f) ||
        be_tensor_alloc(C, &oc, DT_F32, 4, os) || be_tensor_alloc(G, &og, DT_F32, 4, os))
      break;
    int rc1 = unet_forward(uc, &oc, &s.c, ts, &ctx.c, &err);
    if (rc1) {
      printf("FAIL unet_forward cpu: %s\n", err);
      free(err);
      err = NULL;
      g_fail++;
    }
    int rc2 = unet_forward(ug, &og, &s.g, ts, &ctx.g, &err);
    if (rc2) {
      printf("FAIL unet_forward cuda: %s\n", err);
      free(err);
      err = NULL;
      g_fail++;
    }
    char what[64];
    snprintf(what, sizeof what, "unet tiny-sd2 B2 %lldx%lld", (long long)sizes[k][0],
             (long long)sizes[k][1]);
    if (!rc1 && !rc2) compare(&oc, &og, what);
    be_tensor_free(C, &oc);
    be_tensor_free(G, &og);
    free_both(C, G, &s);
    free_both(C, G, &ctx);
  }
  unet_free(uc);
  unet_free(ug);
}

#ifdef HAVE_CLIP
static void test_clip(void) {
  struct clip_text *mc = NULL, *mg = NULL;
  char *err = NULL;
  if (clip_text_load(dir_text, C, &mc, &err) || clip_text_load(dir_text, G, &mg, &err)) {
    printf("FAIL clip_text_load: %s\n", err ? err : "?");
    free(err);
    g_fail++;
    clip_text_free(mc);
    clip_text_free(mg);
    return;
  }
  const struct clip_text_config *cfg = clip_text_config(mc);
  int B = 2;
  int32_t ids[2 * CLIP_TEXT_SEQ];
  for (int i = 0; i < B * CLIP_TEXT_SEQ; i++) ids[i] = (int32_t)(rnd_u64() % (uint64_t)cfg->vocab);
  ids[0] = ids[CLIP_TEXT_SEQ] = cfg->vocab - 2; /* bos-like, eos at the end */
  ids[CLIP_TEXT_SEQ - 1] = ids[2 * CLIP_TEXT_SEQ - 1] = cfg->vocab - 1;
  int64_t os[3] = {B, CLIP_TEXT_SEQ, clip_text_hidden_size(mc)};
  for (int skip = 0; skip < 2; skip++) {
    struct tensor oc, og;
    if (be_tensor_alloc(C, &oc, DT_F32, 3, os) || be_tensor_alloc(G, &og, DT_F32, 3, os)) break;
    int rc1 = clip_text_forward(mc, &oc, ids, B, skip, &err);
    if (rc1) {
      printf("FAIL clip cpu: %s\n", err);
      free(err);
      err = NULL;
      g_fail++;
    }
    int rc2 = clip_text_forward(mg, &og, ids, B, skip, &err);
    if (rc2) {
      printf("FAIL clip cuda: %s\n", err);
      free(err);
      err = NULL;
      g_fail++;
    }
    if (!rc1 && !rc2) compare(&oc, &og, skip ? "clip_text clip_skip 1" : "clip_text last hidden");
    be_tensor_free(C, &oc);
    be_tensor_free(G, &og);
  }
  clip_text_free(mc);
  clip_text_free(mg);
}
#endif

#ifdef HAVE_VAE
static void test_vae(void) {
  struct vae *vc = NULL, *vg = NULL;
  char *err = NULL;
  if (vae_load(dir_vae, C, &vc, &err) || vae_load(dir_vae, G, &vg, &err)) {
    printf("FAIL vae_load: %s\n", err ? err : "?");
    free(err);
    g_fail++;
    vae_free(vc);
    vae_free(vg);
    return;
  }
  int s = vae_downscale(vc), lc = vae_latent_channels(vc);
  int64_t ls[4] = {1, lc, 8, 6}, os[4] = {1, 3, 8 * s, 6 * s};
  struct pair lat, img;
  struct tensor oc, og;
  if (!rand_both(C, G, &lat, DT_F32, 4, ls, 1.0f) && !be_tensor_alloc(C, &oc, DT_F32, 4, os) &&
      !be_tensor_alloc(G, &og, DT_F32, 4, os)) {
    int rc1 = vae_decode(vc, &oc, &lat.c, &err);
    if (rc1) {
      printf("FAIL vae_decode cpu: %s\n", err);
      free(err);
      err = NULL;
      g_fail++;
    }
    int rc2 = vae_decode(vg, &og, &lat.g, &err);
    if (rc2) {
      printf("FAIL vae_decode cuda: %s\n", err);
      free(err);
      err = NULL;
      g_fail++;
    }
    if (!rc1 && !rc2) compare(&oc, &og, "vae decode 8x6 latent");
    be_tensor_free(C, &oc);
    be_tensor_free(G, &og);
    free_both(C, G, &lat);
  }
  if (vae_has_encoder(vc) && !rand_both(C, G, &img, DT_F32, 4, os, 1.0f)) {
    struct tensor mc, mg;
    if (!be_tensor_alloc(C, &mc, DT_F32, 4, ls) && !be_tensor_alloc(G, &mg, DT_F32, 4, ls)) {
      int rc1 = vae_encode(vc, &mc, NULL, &img.c, &err);
      if (rc1) {
        printf("FAIL vae_encode cpu: %s\n", err);
        free(err);
        err = NULL;
        g_fail++;
      }
      int rc2 = vae_encode(vg, &mg, NULL, &img.g, &err);
      if (rc2) {
        printf("FAIL vae_encode cuda: %s\n", err);
        free(err);
        err = NULL;
        g_fail++;
      }
      if (!rc1 && !rc2) compare(&mc, &mg, "vae encode mean");
      be_tensor_free(C, &mc);
      be_tensor_free(G, &mg);
    }
    free_both(C, G, &img);
  }
  vae_free(vc);
  vae_free(vg);
}
#endif

int main(void) {
  int skip = gpu_test_skip_reason();
  if (skip) return skip;
  const char *root = getenv("SOUPD_SOURCE_DIR");
  if (!root) root = SOUPD_SOURCE_DIR;
  snprintf(dir_unet, sizeof dir_unet, "%s/tests/fixtures/tiny-sd2/unet", root);
  snprintf(dir_text, sizeof dir_text, "%s/tests/fixtures/tiny-sd2/text_encoder", root);
  snprintf(dir_vae, sizeof dir_vae, "%s/tests/fixtures/tiny-sd2/vae", root);
  char *err = NULL;
  C = backend_cpu_new(0);
  G = gpu_backend_new(&err);
  if (!C || !G) {
    printf("FAIL: backend creation: %s\n", err ? err : "cpu backend");
    free(err);
    return 1;
  }
  const char *m = getenv("SOUPD_CUDA_MATH");
  if (m && (strcmp(m, "tf32") == 0 || strcmp(m, "f16") == 0)) TOL = 2e-2;
  test_unet();
#ifdef HAVE_CLIP
  test_clip();
#else
  printf("note: server/diffusion/clip_text.h absent, CLIP not compared\n");
#endif
#ifdef HAVE_VAE
  test_vae();
#else
  printf("note: server/diffusion/vae.h absent, VAE not compared\n");
#endif
  be_destroy(G);
  be_destroy(C);
  return gpu_test_exit();
}
