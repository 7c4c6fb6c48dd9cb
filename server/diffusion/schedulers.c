/* schedulers.c: building a scheduler from a diffusers scheduler config:
 * class defaults, overrides, the beta schedule (bit-exact with torch's fp32
 * linspace and cumprod on the CPU), the timestep lists of every spacing
 * (numpy linspace / arange / round-half-even semantics) and the sigma
 * tables; then dispatch of the per-family steps (sched_*.c).
 * Invariant after sched_new: timesteps[n_ts], t_int[n_ts] and, for the
 * sigma families, sigmas[n_ts + 1] are set and never change. */
#include "sched_impl.h"
#include "formats/json_file.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[] = {"ddim", "euler", "euler_a", "dpmpp_2m", "pndm"};
static const char *const class_names[] = {"DDIMScheduler", "EulerDiscreteScheduler",
                                          "EulerAncestralDiscreteScheduler",
                                          "DPMSolverMultistepScheduler", "PNDMScheduler"};

static int sched_errf(char **err, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(err, fmt, ap) < 0) *err = NULL;
    va_end(ap);
  }
  return -1;
}

int sched_kind_from_name(const char *name) {
  for (int k = 0; k < 5; k++)
    if (name && strcmp(name, kind_names[k]) == 0) return k;
  return -1;
}

const char *sched_kind_name(enum sched_kind k) {
  return (unsigned)k < 5 ? kind_names[k] : "?";
}

/* ---- config access: absent or null keys take the class default ---- */

static const json_t *cfg_get(const json_t *cfg, const char *key) {
  const json_t *v = cfg ? json_object_get(cfg, key) : NULL;
  return (v && !json_is_null(v)) ? v : NULL;
}

static double cfg_num(const json_t *cfg, const char *key, double def) {
  const json_t *v = cfg_get(cfg, key);
  double x;
  return (v && json_file_number(v, &x)) ? x : def;
}

static int cfg_bool(const json_t *cfg, const char *key, int def) {
  const json_t *v = cfg_get(cfg, key);
  return (v && json_is_boolean(v)) ? json_is_true(v) : def;
}

static const char *cfg_str(const json_t *cfg, const char *key, const char *def) {
  const json_t *v = cfg_get(cfg, key);
  return (v && json_is_string(v)) ? json_string_value(v) : def;
}

/* ---- numerics that mirror torch / numpy ---- */

/* torch.linspace(a, b, n, dtype=float32) on the CPU: fp32 step, FMA per
 * element, the second half counted back from the end. */
static void torch_linspace_f32(double a, double b, int n, float *out) {
  float fs = (float)a, fe = (float)b;
  if (n == 1) {
    out[0] = fs;
    return;
  }
  float step = (fe - fs) / (float)(n - 1);
  int half = n / 2;
  for (int i = 0; i < n; i++)
    out[i] = i < half ? fmaf(step, (float)i, fs) : fmaf(-step, (float)(n - 1 - i), fe);
}

/* numpy.linspace(start, stop, num)[i] in float64. */
static double np_linspace(double start, double stop, int num, int i) {
  if (num == 1) return start;
  if (i == num - 1) return stop;
  double step = (stop - start) / (double)(num - 1);
  return (double)i * step + start;
}

/* numpy.arange(start, stop, step) for doubles: length and element i. */
static int np_arange_len(double start, double stop, double step) {
  double len = ceil((stop - start) / step);
  return len > 0 ? (int)len : 0;
}
static double np_arange_at(double start, double step, int i) {
  if (i == 0) return start;
  if (i == 1) return start + step;
  double delta = (start + step) - start;
  return start + (double)i * delta;
}

/* numpy.interp(x, arange(n), fp) for x in [0, n-1]. */
static double np_interp_index(double x, const float *fp, int n) {
  if (x <= 0) return fp[0];
  if (x >= n - 1) return fp[n - 1];
  int j = (int)floor(x);
  double slope = ((double)fp[j + 1] - (double)fp[j]) / 1.0;
  double r = slope * (x - (double)j) + (double)fp[j];
  if (isnan(r)) r = slope * (x - (double)(j + 1)) + (double)fp[j + 1];
  return r;
}

static int build_alphas(struct sched *s, const json_t *cfg, char **err) {
  if (cfg_get(cfg, "trained_betas")) return sched_errf(err, "scheduler: trained_betas unsupported");
  if (cfg_bool(cfg, "rescale_betas_zero_snr", 0))
    return sched_errf(err, "scheduler: rescale_betas_zero_snr unsupported");
  double bs = cfg_num(cfg, "beta_start", 0.0001), be = cfg_num(cfg, "beta_end", 0.02);
  const char *schedule = cfg_str(cfg, "beta_schedule", "linear");
  int n = s->n_train;
  float *betas = malloc((size_t)n * sizeof *betas);
  s->alphas_cumprod = malloc((size_t)n * sizeof(float));
  if (!betas || !s->alphas_cumprod) {
    free(betas);
    return sched_errf(err, "scheduler: out of memory");
  }
  if (strcmp(schedule, "linear") == 0) {
    torch_linspace_f32(bs, be, n, betas);
  } else if (strcmp(schedule, "scaled_linear") == 0) {
    torch_linspace_f32(sqrt(bs), sqrt(be), n, betas);
    for (int i = 0; i < n; i++) betas[i] = betas[i] * betas[i];
  } else {
    free(betas);
    return sched_errf(err, "scheduler: beta_schedule \"%s\" unsupported", schedule);
  }
  /* torch.cumprod on the CPU accumulates in double, rounds each output. */
  double acc = 1.0;
  for (int i = 0; i < n; i++) {
    float alpha = 1.0f - betas[i];
    acc *= (double)alpha;
    s->alphas_cumprod[i] = (float)acc;
  }
  free(betas);
  return 0;
}

/* sigma(t) = ((1 - a) / a) ** 0.5 in fp32, as diffusers' torch expression. */
static float sigma_of(float a) {
  return sqrtf((1.0f - a) / a);
}

static int alloc_timesteps(struct sched *s, int n) {
  s->n_ts = n;
  s->timesteps = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
  s->t_int = calloc((size_t)(n > 0 ? n : 1), sizeof(int64_t));
  return (s->timesteps && s->t_int) ? 0 : -1;
}

/* Integer timesteps for DDIM, DPM and PNDM (before PNDM's PLMS reordering). */
static int build_int_timesteps(struct sched *s, int offset, char **err) {
  int T = s->n_train, N = s->steps;
  int dpm = s->kind == SCHED_DPMPP_2M;
  int last_t = dpm ? s->last_timestep : T;
  int n = 0;
  int64_t *t = NULL;
  if (s->spacing == SCHED_SPACING_LINSPACE) {
    int m = dpm ? N + 1 : N;
    t = malloc((size_t)m * sizeof *t);
    if (!t) goto nomem;
    for (int i = 0; i < m; i++)
      t[i] = (int64_t)nearbyint(np_linspace(0, (double)((dpm ? last_t : T) - 1), m, i));
    /* reversed; DPM drops the last (smallest) */
    n = N;
    int64_t *r = malloc((size_t)n * sizeof *r);
    if (!r) goto nomem;
    for (int i = 0; i < n; i++) r[i] = t[m - 1 - i];
    free(t);
    t = r;
  } else if (s->spacing == SCHED_SPACING_LEADING) {
    int m = dpm ? N + 1 : N;
    int ratio = dpm ? last_t / (N + 1) : T / N;
    n = N;
    t = malloc((size_t)n * sizeof *t);
    if (!t) goto nomem;
    for (int i = 0; i < n; i++) t[i] = (int64_t)(m - 1 - i) * ratio + offset;
  } else {
    double ratio = (double)T / (double)N;
    double start = dpm ? (double)last_t : (double)T;
    n = np_arange_len(start, 0, -ratio);
    t = malloc((size_t)(n > 0 ? n : 1) * sizeof *t);
    if (!t) goto nomem;
    for (int i = 0; i < n; i++) t[i] = (int64_t)nearbyint(np_arange_at(start, -ratio, i)) - 1;
  }
  if (s->kind == SCHED_PNDM && !s->prk_count) {
    /* PLMS (skip_prk_steps): ascending _ts, then reverse(_ts[:-1] + _ts[-2:-1] + _ts[-1:]). */
    int64_t *asc = malloc((size_t)(n > 0 ? n : 1) * sizeof *asc);
    if (!asc) goto nomem;
    for (int i = 0; i < n; i++) asc[i] = t[n - 1 - i];
    int m = n >= 2 ? n + 1 : n;
    if (alloc_timesteps(s, m) < 0) {
      free(asc);
      goto nomem;
    }
    int k = 0;
    int64_t *seq = malloc((size_t)(m > 0 ? m : 1) * sizeof *seq);
    if (!seq) {
      free(asc);
      goto nomem;
    }
    for (int i = 0; i < n - 1; i++) seq[k++] = asc[i];
    if (n >= 2) seq[k++] = asc[n - 2];
    if (n >= 1) seq[k++] = asc[n - 1];
    for (int i = 0; i < m; i++) s->t_int[i] = seq[m - 1 - i];
    free(seq);
    free(asc);
  } else if (s->kind == SCHED_PNDM) {
    /* PRK warm-up then PLMS (skip_prk_steps false): b = _ts[-4:];
     * prk = reverse((repeat2(b) + tile([0, T//N//2]))[:-1].repeat2[1:-1]);
     * plms = reverse(_ts[:-3]). */
    int64_t asc[4], pairs[8], rep[16];
    if (n < 4) {
      free(t);
      return sched_errf(err, "scheduler: pndm with Runge-Kutta steps needs at least 4 steps");
    }
    int nb = 4, half = s->step_ratio / 2;
    for (int i = 0; i < nb; i++) asc[i] = t[nb - 1 - i]; /* the 4 smallest, ascending */
    for (int i = 0; i < nb; i++) {
      pairs[2 * i] = asc[i];
      pairs[2 * i + 1] = asc[i] + half;
    }
    int np_ = 2 * nb - 1, nr = 0;
    for (int i = 0; i < np_; i++) rep[nr++] = pairs[i], rep[nr++] = pairs[i];
    int nprk = nr >= 2 ? nr - 2 : 0, nplms = n > 3 ? n - 3 : 0;
    if (alloc_timesteps(s, nprk + nplms) < 0) goto nomem;
    for (int i = 0; i < nprk; i++) s->t_int[i] = rep[nr - 2 - i];
    for (int i = 0; i < nplms; i++) s->t_int[nprk + i] = t[3 + i]; /* t is descending */
    s->prk_count = nprk;
  } else {
    if (alloc_timesteps(s, n) < 0) goto nomem;
    memcpy(s->t_int, t, (size_t)n * sizeof *t);
  }
  for (int i = 0; i < s->n_ts; i++) s->timesteps[i] = (float)s->t_int[i];
  free(t);
  return 0;
nomem:
  free(t);
  return sched_errf(err, "scheduler: out of memory");
}

/* Euler family: fp32 (possibly fractional) timesteps. */
static int build_euler_timesteps(struct sched *s, int offset, char **err) {
  int T = s->n_train, N = s->steps, n = N;
  if (s->spacing == SCHED_SPACING_TRAILING) n = np_arange_len(T, 0, -((double)T / N));
  if (alloc_timesteps(s, n) < 0) return sched_errf(err, "scheduler: out of memory");
  for (int i = 0; i < n; i++) {
    float v;
    if (s->spacing == SCHED_SPACING_LINSPACE) {
      v = (float)np_linspace(0, (double)(T - 1), N, N - 1 - i);
    } else if (s->spacing == SCHED_SPACING_LEADING) {
      v = (float)((int64_t)(N - 1 - i) * (T / N));
      v += (float)offset;
    } else {
      v = (float)nearbyint(np_arange_at(T, -((double)T / N), i));
      v -= 1.0f;
    }
    s->timesteps[i] = v;
    s->t_int[i] = (int64_t)v;
  }
  return 0;
}

/* sigmas[i] = interp(t_i) over the fp32 sigma table; sigmas[n_ts] = final. */
static int build_sigmas(struct sched *s, int final_zero, char **err) {
  int T = s->n_train;
  float *tab = malloc((size_t)T * sizeof *tab);
  s->sigmas = malloc((size_t)(s->n_ts + 1) * sizeof(float));
  if (!tab || !s->sigmas) {
    free(tab);
    return sched_errf(err, "scheduler: out of memory");
  }
  for (int i = 0; i < T; i++) tab[i] = sigma_of(s->alphas_cumprod[i]);
  for (int i = 0; i < s->n_ts; i++)
    s->sigmas[i] = (float)np_interp_index((double)s->timesteps[i], tab, T);
  s->sigmas[s->n_ts] = final_zero ? 0.0f : sigma_of(s->alphas_cumprod[0]);
  free(tab);
  return 0;
}

static int parse_spacing(const char *v, enum sched_spacing *out) {
  if (strcmp(v, "leading") == 0)
    *out = SCHED_SPACING_LEADING;
  else if (strcmp(v, "linspace") == 0)
    *out = SCHED_SPACING_LINSPACE;
  else if (strcmp(v, "trailing") == 0)
    *out = SCHED_SPACING_TRAILING;
  else
    return -1;
  return 0;
}

static int configure(struct sched *s, const json_t *cfg, const struct sched_overrides *ov,
                     char **err) {
  int fix = ov && ov->sd_pipeline_fixups;
  const char *pred = (ov && ov->prediction_type) ? ov->prediction_type
                                                 : cfg_str(cfg, "prediction_type", "epsilon");
  if (strcmp(pred, "epsilon") == 0)
    s->pred = SCHED_PRED_EPSILON;
  else if (strcmp(pred, "v_prediction") == 0)
    s->pred = SCHED_PRED_V;
  else
    return sched_errf(err, "scheduler: prediction_type \"%s\" unsupported", pred);

  int leading_default = s->kind == SCHED_DDIM || s->kind == SCHED_PNDM;
  const char *sp = (ov && ov->spacing)
                       ? ov->spacing
                       : cfg_str(cfg, "timestep_spacing", leading_default ? "leading" : "linspace");
  if (parse_spacing(sp, &s->spacing) < 0)
    return sched_errf(err, "scheduler: timestep_spacing \"%s\" unsupported", sp);

  s->n_train = (int)cfg_num(cfg, "num_train_timesteps", 1000);
  if (s->n_train < 2 || s->n_train > 100000)
    return sched_errf(err, "scheduler: num_train_timesteps %d out of range", s->n_train);
  if (s->steps < 1 || s->steps > s->n_train)
    return sched_errf(err, "scheduler: steps %d not in [1, %d]", s->steps, s->n_train);
  int offset = fix ? 1 : (int)cfg_num(cfg, "steps_offset", 0);
  s->step_ratio = s->n_train / s->steps;
  if (cfg_bool(cfg, "thresholding", 0))
    return sched_errf(err, "scheduler: thresholding unsupported");
  if (cfg_bool(cfg, "use_karras_sigmas", 0) || cfg_bool(cfg, "use_exponential_sigmas", 0) ||
      cfg_bool(cfg, "use_beta_sigmas", 0) || cfg_bool(cfg, "use_lu_lambdas", 0) ||
      cfg_bool(cfg, "use_flow_sigmas", 0))
    return sched_errf(err, "scheduler: karras/exponential/beta/lu/flow sigmas unsupported");
  if (build_alphas(s, cfg, err) < 0) return -1;

  switch (s->kind) {
  case SCHED_DDIM:
  case SCHED_PNDM: {
    int one = cfg_bool(cfg, "set_alpha_to_one", s->kind == SCHED_DDIM);
    s->final_alpha_cumprod = one ? 1.0f : s->alphas_cumprod[0];
    s->clip_sample = s->kind == SCHED_DDIM && !fix && cfg_bool(cfg, "clip_sample", 1);
    s->clip_sample_range = (float)cfg_num(cfg, "clip_sample_range", 1.0);
    s->eta = (s->kind == SCHED_DDIM && ov && ov->eta > 0) ? ov->eta : 0.0f;
    /* prk_count != 0 marks the Runge-Kutta warm-up; its exact value is set below */
    s->prk_count = s->kind == SCHED_PNDM && !cfg_bool(cfg, "skip_prk_steps", 0);
    if (build_int_timesteps(s, offset, err) < 0) return -1;
    s->init_noise_sigma = 1.0f;
    return 0;
  }
  case SCHED_EULER:
  case SCHED_EULER_A: {
    if (strcmp(cfg_str(cfg, "interpolation_type", "linear"), "linear") != 0 &&
        s->kind == SCHED_EULER)
      return sched_errf(err, "scheduler: interpolation_type unsupported");
    if (strcmp(cfg_str(cfg, "timestep_type", "discrete"), "discrete") != 0 &&
        s->kind == SCHED_EULER)
      return sched_errf(err, "scheduler: timestep_type unsupported");
    int zero =
        s->kind == SCHED_EULER_A || strcmp(cfg_str(cfg, "final_sigmas_type", "zero"), "zero") == 0;
    if (build_euler_timesteps(s, offset, err) < 0 || build_sigmas(s, zero, err) < 0) return -1;
    float mx = 0;
    for (int i = 0; i <= s->n_ts; i++) mx = s->sigmas[i] > mx ? s->sigmas[i] : mx;
    s->init_noise_sigma = s->spacing == SCHED_SPACING_LEADING ? sqrtf(mx * mx + 1.0f) : mx;
    return 0;
  }
  case SCHED_DPMPP_2M: {
    const char *alg = cfg_str(cfg, "algorithm_type", "dpmsolver++");
    if (strcmp(alg, "dpmsolver++") != 0 && strcmp(alg, "deis") != 0)
      return sched_errf(err, "scheduler: algorithm_type \"%s\" unsupported", alg);
    const char *st = cfg_str(cfg, "solver_type", "midpoint");
    s->solver_heun = strcmp(st, "heun") == 0;
    s->solver_order = (int)cfg_num(cfg, "solver_order", 2);
    if (s->solver_order < 1 || s->solver_order > 2)
      return sched_errf(err, "scheduler: solver_order %d unsupported", s->solver_order);
    s->lower_order_final = cfg_bool(cfg, "lower_order_final", 1);
    s->euler_at_final = cfg_bool(cfg, "euler_at_final", 0);
    s->final_sigmas_zero = strcmp(cfg_str(cfg, "final_sigmas_type", "zero"), "zero") == 0;
    /* lambda_min_clipped: last_timestep = T - #{lambda_t < clip} */
    double clip = cfg_num(cfg, "lambda_min_clipped", -INFINITY);
    int clipped = 0;
    for (int i = 0; i < s->n_train; i++) {
      float a = s->alphas_cumprod[i];
      float lam = logf(sqrtf(a)) - logf(sqrtf(1.0f - a));
      clipped += (double)lam < clip;
    }
    s->last_timestep = s->n_train - clipped;
    if (s->last_timestep < 1)
      return sched_errf(err, "scheduler: lambda_min_clipped clips every step");
    if (build_int_timesteps(s, offset, err) < 0 || build_sigmas(s, s->final_sigmas_zero, err) < 0)
      return -1;
    s->init_noise_sigma = 1.0f;
    return 0;
  }
  }
  return sched_errf(err, "scheduler: bad kind");
}

int sched_new(const json_t *config, const struct sched_overrides *ov, int steps, struct sched **out,
              char **err) {
  *out = NULL;
  int kind = -1;
  if (ov && ov->name) {
    kind = sched_kind_from_name(ov->name);
    if (kind < 0) return sched_errf(err, "scheduler: unknown scheduler \"%s\"", ov->name);
  } else {
    const char *cls = cfg_str(config, "_class_name", NULL);
    for (int k = 0; cls && k < 5; k++)
      if (strcmp(cls, class_names[k]) == 0) kind = k;
    if (kind < 0)
      return sched_errf(err, "scheduler: config class \"%s\" unsupported; name a scheduler",
                        cls ? cls : "(none)");
  }
  struct sched *s = calloc(1, sizeof *s);
  if (!s) return sched_errf(err, "scheduler: out of memory");
  s->kind = (enum sched_kind)kind;
  s->steps = steps;
  if (configure(s, config, ov, err) < 0) {
    sched_free(s);
    return -1;
  }
  *out = s;
  return 0;
}

void sched_free(struct sched *s) {
  if (!s) return;
  free(s->timesteps);
  free(s->t_int);
  free(s->alphas_cumprod);
  free(s->sigmas);
  for (int i = 0; i < SCHED_MAX_HISTORY; i++) free(s->hist[i]);
  free(s->cur_sample);
  free(s->prk_acc);
  free(s);
}

enum sched_kind sched_kind(const struct sched *s) {
  return s->kind;
}
int sched_num_timesteps(const struct sched *s) {
  return s->n_ts;
}
const float *sched_timesteps(const struct sched *s) {
  return s->timesteps;
}
float sched_init_noise_sigma(const struct sched *s) {
  return s->init_noise_sigma;
}
const float *sched_sigmas(const struct sched *s) {
  return s->sigmas;
}
const float *sched_alphas_cumprod(const struct sched *s, int *n) {
  if (n) *n = s->n_train;
  return s->alphas_cumprod;
}

int sched_needs_noise(const struct sched *s) {
  return s->kind == SCHED_EULER_A || (s->kind == SCHED_DDIM && s->eta > 0);
}

void sched_scale_model_input(const struct sched *s, int step_index, const float *in, float *out,
                             size_t n) {
  if ((s->kind == SCHED_EULER || s->kind == SCHED_EULER_A) && step_index >= 0 &&
      step_index < s->n_ts) {
    float sigma = s->sigmas[step_index];
    float d = sqrtf(sigma * sigma + 1.0f);
    for (size_t i = 0; i < n; i++) out[i] = in[i] / d;
  } else if (out != in) {
    memmove(out, in, n * sizeof *out);
  }
}

int sched_step(struct sched *s, int step_index, const float *model_output, const float *sample,
               float *out, size_t n, const float *noise, char **err) {
  if (step_index != s->next_index)
    return sched_errf(err, "scheduler: step %d called, expected step %d", step_index,
                      s->next_index);
  if (step_index >= s->n_ts)
    return sched_errf(err, "scheduler: step %d past the last step %d", step_index, s->n_ts - 1);
  if (s->n_state == 0) s->n_state = n;
  if (n != s->n_state)
    return sched_errf(err, "scheduler: %zu elements, the first step had %zu", n, s->n_state);
  if (sched_needs_noise(s) && !noise) return sched_errf(err, "scheduler: noise required");
  int rc;
  switch (s->kind) {
  case SCHED_DDIM:
    rc = sched_step_ddim(s, step_index, model_output, sample, out, n, noise);
    break;
  case SCHED_EULER:
  case SCHED_EULER_A:
    rc = sched_step_euler(s, step_index, model_output, sample, out, n, noise);
    break;
  case SCHED_DPMPP_2M:
    rc = sched_step_dpm(s, step_index, model_output, sample, out, n);
    break;
  default:
    rc = sched_step_pndm(s, step_index, model_output, sample, out, n);
    break;
  }
  if (rc < 0) return sched_errf(err, "scheduler: out of memory");
  s->next_index++;
  return 0;
}
