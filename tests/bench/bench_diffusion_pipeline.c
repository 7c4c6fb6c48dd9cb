/* bench_diffusion_pipeline.c: times text-to-image end to end on the CPU
 * backend, per stage, against diffusers' StableDiffusionPipeline measured in
 * the same run (when python3 with diffusers is importable).
 *
 *   bench_diffusion_pipeline [MODEL_DIR] [STEPS] [WIDTH] [HEIGHT] [RUNS] [THREADS] [SCHEDULER]
 *
 * Defaults: tests/fixtures/tiny-sd2, 20 steps, the model's size, 3 runs, 2
 * threads, the model's scheduler. One warm-up generate, then RUNS timed ones
 * (guidance 7.5, a fixed prompt and negative prompt); prints the median of
 * each stage (text, denoise, decode, total) and the per-UNet-call time. The
 * diffusers baseline runs the same request with torch.set_num_threads(THREADS)
 * and the same number of runs after a warm-up, and the ratio
 * diffusers / soupd is printed (> 1: soupd is faster). Never fails on a time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diffusion/pipeline.h"

#define PROMPT "a photo of an astronaut riding a horse on mars"
#define NEG "blurry, low quality"

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int calls;
static int count_calls(void *ctx, int step, int steps) {
  (void)ctx;
  (void)step;
  calls = steps;
  return 0;
}

/* Runs the diffusers baseline; returns its median total ms, or -1. */
static double diffusers_ms(const char *dir, const struct gen_params *g, int runs, int threads) {
  char cmd[4096];
  snprintf(
      cmd, sizeof cmd,
      "python3 - <<'EOF' 2>/dev/null\n"
      "import time, statistics, torch, diffusers\n"
      "torch.set_num_threads(%d)\n"
      "C = {'ddim': diffusers.DDIMScheduler, 'euler': diffusers.EulerDiscreteScheduler,\n"
      "     'euler_a': diffusers.EulerAncestralDiscreteScheduler,\n"
      "     'dpmpp_2m': diffusers.DPMSolverMultistepScheduler, 'pndm': diffusers.PNDMScheduler}\n"
      "p = diffusers.StableDiffusionPipeline.from_pretrained('%s', torch_dtype=torch.float32,\n"
      "    safety_checker=None, requires_safety_checker=False)\n"
      "p.set_progress_bar_config(disable=True)\n"
      "p.scheduler = C['%s'].from_config(p.scheduler.config)\n"
      "kw = dict(prompt='" PROMPT "', negative_prompt='" NEG "', num_inference_steps=%d,\n"
      "          guidance_scale=7.5, width=%d, height=%d, output_type='np')\n"
      "p(**kw)\n"
      "ts = []\n"
      "for _ in range(%d):\n"
      "    t0 = time.perf_counter(); p(**kw); ts.append((time.perf_counter() - t0) * 1e3)\n"
      "print(statistics.median(ts))\n"
      "EOF",
      threads, dir, g->scheduler, g->steps, g->width, g->height, runs);
  FILE *f = popen(cmd, "r");
  if (!f) return -1;
  double ms = -1;
  if (fscanf(f, "%lf", &ms) != 1) ms = -1;
  pclose(f);
  return ms;
}

int main(int argc, char **argv) {
  const char *root = getenv("SOUPD_SOURCE_DIR");
  char def[4096];
  snprintf(def, sizeof def, "%s/tests/fixtures/tiny-sd2", root ? root : ".");
  const char *dir = argc > 1 ? argv[1] : def;
  int steps = argc > 2 ? atoi(argv[2]) : 20;
  int runs = argc > 5 ? atoi(argv[5]) : 3;
  int threads = argc > 6 ? atoi(argv[6]) : 2;
  if (runs < 1 || runs > 100) runs = 3;
  struct backend *be = backend_cpu_new(threads);
  struct pipeline *p = NULL;
  char *err = NULL;
  if (!be || pipeline_load(dir, be, &p, &err)) {
    fprintf(stderr, "load %s: %s\n", dir, err ? err : "no backend");
    return 1;
  }
  struct gen_params g;
  pipeline_defaults(p, &g);
  g.prompt = PROMPT;
  g.negative_prompt = NEG;
  g.steps = steps;
  if (argc > 3) g.width = atoi(argv[3]);
  if (argc > 4) g.height = atoi(argv[4]);
  if (argc > 7) g.scheduler = argv[7];
  if (!g.scheduler) g.scheduler = "ddim";
  size_t npx = (size_t)g.width * g.height * 3;
  uint8_t *rgb = malloc(npx);
  double *tt = calloc(4 * (size_t)runs, sizeof *tt);
  if (!rgb || !tt) return 1;
  for (int r = -1; r < runs; r++) {
    struct gen_timings t;
    g.seed = (uint64_t)(r + 1);
    if (pipeline_generate(p, &g, NULL, rgb, NULL, count_calls, NULL, &t, &err)) {
      fprintf(stderr, "generate: %s\n", err);
      return 1;
    }
    if (r < 0) continue;
    tt[r] = t.text_ms;
    tt[runs + r] = t.denoise_ms;
    tt[2 * runs + r] = t.decode_ms;
    tt[3 * runs + r] = t.text_ms + t.denoise_ms + t.decode_ms;
  }
  double text = median(tt, runs), den = median(tt + runs, runs);
  double dec = median(tt + 2 * runs, runs), tot = median(tt + 3 * runs, runs);
  printf("soupd pipeline %s: %dx%d, %s, %d steps (%d UNet calls, batch 2), %d threads, %d runs\n",
         dir, g.width, g.height, g.scheduler, g.steps, calls, threads, runs);
  printf("  median ms: text %.2f  denoise %.2f (%.2f per UNet call)  decode %.2f  total %.2f\n",
         text, den, den / calls, dec, tot);
  double ref = diffusers_ms(dir, &g, runs, threads);
  if (ref > 0)
    printf("  diffusers (torch fp32, same threads) median total %.2f ms: ratio %.2fx\n", ref,
           ref / tot);
  else
    printf("  diffusers baseline unavailable (python3 + diffusers not importable)\n");
  free(rgb);
  free(tt);
  pipeline_free(p);
  be_destroy(be);
  return 0;
}
