/* sched_impl.h: the scheduler state shared by the per-family step files
 * (sched_ddim.c, sched_euler.c, sched_dpm.c, sched_pndm.c). Private to
 * server/diffusion. Scalars are float because diffusers computes them as
 * torch fp32 tensors. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "schedulers.h"

#define SCHED_MAX_HISTORY 4

struct sched {
  enum sched_kind kind;
  enum sched_prediction pred;
  enum sched_spacing spacing;
  int n_train;           /* num_train_timesteps */
  int steps;             /* num_inference_steps asked for */
  int step_ratio;        /* n_train / steps (integer), DDIM/PNDM prev-timestep stride */
  int last_timestep;     /* DPM: n_train minus the lambda_min_clipped count */
  int n_ts;              /* number of UNet calls */
  float *timesteps;      /* [n_ts] */
  int64_t *t_int;        /* [n_ts] integer timesteps (DDIM, DPM, PNDM) */
  float *alphas_cumprod; /* [n_train] */
  float final_alpha_cumprod;
  float *sigmas; /* [n_ts + 1] Euler family and DPM, else NULL */
  float init_noise_sigma;
  /* DDIM */
  float eta;
  int clip_sample;
  float clip_sample_range;
  /* DPM-Solver++ */
  int solver_order; /* 1 or 2 */
  int solver_heun;  /* solver_type "heun" (else midpoint) */
  int lower_order_final;
  int euler_at_final;
  int final_sigmas_zero; /* final_sigmas_type "zero" (else sigma_min) */
  int lower_order_nums;
  /* state of multistep solvers */
  int next_index;
  size_t n_state;                 /* element count fixed by the first step */
  float *hist[SCHED_MAX_HISTORY]; /* DPM: hist[0] = previous x0; PNDM: ets, oldest first */
  int n_hist;
  float *cur_sample; /* PNDM */
  float *prk_acc;    /* PNDM Runge-Kutta: the weighted sum of the outputs so far */
  int prk_count;     /* PNDM: leading PRK calls (0 with skip_prk_steps) */
};

int sched_step_ddim(struct sched *s, int i, const float *e, const float *x, float *out, size_t n,
                    const float *noise);
int sched_step_euler(struct sched *s, int i, const float *e, const float *x, float *out, size_t n,
                     const float *noise);
int sched_step_dpm(struct sched *s, int i, const float *e, const float *x, float *out, size_t n);
int sched_step_pndm(struct sched *s, int i, const float *e, const float *x, float *out, size_t n);
