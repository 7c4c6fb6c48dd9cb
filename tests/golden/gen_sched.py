"""Scheduler and guidance goldens (tests/fixtures/sched/): diffusers is the reference.

For every scheduler (DDIM, Euler, Euler ancestral, DPM-Solver++ 2M, PNDM/PLMS) x
prediction type (epsilon, v_prediction) x spacing (absent = class default, leading,
linspace, trailing), on SD1.5- and SD2.1-style scheduler configs, it runs the
StableDiffusionPipeline denoising loop with a fake model: model_out =
0.9*u - 0.3*u^3/(1+u^2) + 0.05*(t/1000), u = scale_model_input(sample)
(a deterministic, non-constant function of the sample and t). It records the
timesteps, sigmas, init_noise_sigma, the UNet input, the model output and the
sample after every step.

Noise without torch's RNG: the noise of every step is drawn up front (torch.randn
with a fixed seed) and stored; DDIM gets it through step(variance_noise=...),
Euler ancestral through a monkeypatch of
diffusers.schedulers.scheduling_euler_ancestral_discrete.randn_tensor that
returns the stored tensor of the current step. The C test feeds the same noise.

PNDM also runs without skip_prk_steps (the Runge-Kutta warm-up of the class default).
Also: timestep/sigma lists for many step counts, alphas_cumprod of both beta
schedules, and cfg_combine cases (guidance and rescale_noise_cfg).

Files: cases.json (the manifest: config dict and overrides of each case, exactly
what the C test passes to sched_new) and sched.safetensors (fp32 tensors named
"<case>.<what>").
"""
import json
import pathlib

import numpy as np
import torch
from safetensors.torch import save_file

import diffusers
from diffusers.schedulers import scheduling_euler_ancestral_discrete as ea_mod
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

CLASSES = {
    "ddim": diffusers.DDIMScheduler,
    "euler": diffusers.EulerDiscreteScheduler,
    "euler_a": diffusers.EulerAncestralDiscreteScheduler,
    "dpmpp_2m": diffusers.DPMSolverMultistepScheduler,
    "pndm": diffusers.PNDMScheduler,
}

# scheduler_config.json of SD1.5 / SD2.1 (digest section 1), without timestep_spacing.
SD1 = {
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "clip_sample": False,
}
SD2 = {
    "_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
    "prediction_type": "v_prediction", "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "trained_betas": None,
}
SHAPE = [1, 4, 4, 4]  # schedulers are elementwise: one sample is enough
CFG_SHAPE = [2, 4, 4, 4]


def fake_model(u, t):
    tt = float(t) / 1000.0
    return 0.9 * u - 0.3 * (u * u * u) / (1 + u * u) + 0.05 * tt


def make_sched(kind, config, ov):
    cfg = dict(config)
    if ov.get("spacing"):
        cfg["timestep_spacing"] = ov["spacing"]
    if ov.get("prediction_type"):
        cfg["prediction_type"] = ov["prediction_type"]
    return CLASSES[kind].from_config(cfg)


def run_case(name, kind, config, ov, steps, seed, tensors):
    s = make_sched(kind, config, ov)
    s.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    n_ts = len(s.timesteps)
    x = torch.randn(SHAPE, generator=g, dtype=torch.float32) * s.init_noise_sigma
    eta = float(ov.get("eta", 0.0))
    need_noise = kind == "euler_a" or (kind == "ddim" and eta > 0)
    noise = torch.randn([n_ts] + SHAPE, generator=g, dtype=torch.float32)
    samples, mins, mouts = [x.clone()], [], []
    orig_randn = ea_mod.randn_tensor
    try:
        for i, t in enumerate(s.timesteps):
            ea_mod.randn_tensor = lambda *a, _i=i, **k: noise[_i].clone()
            u = s.scale_model_input(x, t)
            e = fake_model(u, t)
            if kind == "ddim":
                x = s.step(e, t, x, eta=eta, variance_noise=noise[i] if eta > 0 else None).prev_sample
            else:
                x = s.step(e, t, x).prev_sample
            mins.append(u.clone())
            mouts.append(e.clone())
            samples.append(x.clone())
    finally:
        ea_mod.randn_tensor = orig_randn
    tensors[f"{name}.timesteps"] = s.timesteps.to(torch.float32).contiguous()
    tensors[f"{name}.init_sigma"] = torch.tensor([float(s.init_noise_sigma)], dtype=torch.float32)
    tensors[f"{name}.sample"] = torch.stack(samples).contiguous()
    if kind in ("euler", "euler_a"):  # the others pass the sample through
        tensors[f"{name}.model_in"] = torch.stack(mins).contiguous()
    tensors[f"{name}.model_out"] = torch.stack(mouts).contiguous()
    if need_noise:
        tensors[f"{name}.noise"] = noise.contiguous()
    if hasattr(s, "sigmas") and kind in ("euler", "euler_a", "dpmpp_2m"):
        tensors[f"{name}.sigmas"] = s.sigmas.to(torch.float32).contiguous()
    return {"name": name, "kind": kind, "config": config, "overrides": ov, "steps": steps,
            "shape": SHAPE, "noise": need_noise}


def main(fixtures_dir):
    out = pathlib.Path(fixtures_dir) / "sched"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tensors, cases, seed = {}, [], 1000

    # main grid
    for kind in CLASSES:
        for pred in ("epsilon", "v_prediction"):
            for spacing in (None, "leading", "linspace", "trailing"):
                ov = {"name": kind}
                if spacing:
                    ov["spacing"] = spacing
                if pred == "epsilon":
                    config = SD1
                elif kind in ("dpmpp_2m", "pndm"):  # v through the override path
                    config, ov["prediction_type"] = SD1, "v_prediction"
                else:
                    config = SD2
                name = f"{kind}_{'eps' if pred == 'epsilon' else 'v'}_{spacing or 'default'}"
                seed += 1
                cases.append(run_case(name, kind, config, ov, 10, seed, tensors))
    # extras
    extra = [
        ("ddim_eta_eps", "ddim", SD1, {"name": "ddim", "eta": 0.5}, 10),
        ("ddim_eta1_v_trailing", "ddim", SD2, {"name": "ddim", "eta": 1.0, "spacing": "trailing"}, 7),
        ("ddim_classdefaults", "ddim", {"_class_name": "DDIMScheduler"}, {}, 10),
        ("pndm_classdefaults", "pndm", {"_class_name": "PNDMScheduler", "skip_prk_steps": True}, {}, 10),
        ("euler_linear_beta", "euler", {"_class_name": "EulerDiscreteScheduler", "beta_schedule": "linear"}, {}, 12),
        ("euler_sigma_min", "euler", dict(SD1, final_sigmas_type="sigma_min"), {"name": "euler"}, 10),
        ("dpm_sigma_min_20", "dpmpp_2m", dict(SD1, final_sigmas_type="sigma_min"), {"name": "dpmpp_2m"}, 20),
        ("dpm_sigma_min_10", "dpmpp_2m", dict(SD1, final_sigmas_type="sigma_min"), {"name": "dpmpp_2m"}, 10),
        ("dpm_zero_20", "dpmpp_2m", SD2, {"name": "dpmpp_2m", "spacing": "trailing"}, 20),
        ("dpm_heun", "dpmpp_2m", dict(SD1, solver_type="heun"), {"name": "dpmpp_2m"}, 12),
        ("pndm_50", "pndm", SD1, {}, 50),
        ("pndm_prk_eps", "pndm", dict(SD1, skip_prk_steps=False), {}, 10),
        ("pndm_prk_v", "pndm", dict(SD1, skip_prk_steps=False), {"prediction_type": "v_prediction"}, 7),
        ("pndm_prk_classdefaults", "pndm", {"_class_name": "PNDMScheduler"}, {}, 12),
        ("ddim_sd2_50", "ddim", SD2, {}, 50),
        ("euler_a_sd1_25", "euler_a", SD1, {"name": "euler_a"}, 25),
    ]
    for name, kind, config, ov, steps in extra:
        seed += 1
        cases.append(run_case(name, kind, config, ov, steps, seed, tensors))

    # timestep / sigma lists for many step counts (SD1 config)
    ts_cases = []
    for kind in CLASSES:
        for spacing in ("leading", "linspace", "trailing"):
            for n in (1, 2, 3, 4, 6, 7, 10, 15, 16, 20, 25, 30, 33, 50, 64, 100, 150, 333, 999):
                if kind == "pndm" and n == 1:
                    continue
                s = make_sched(kind, SD1, {"spacing": spacing})
                s.set_timesteps(n)
                nm = f"ts_{kind}_{spacing}_{n}"
                tensors[f"{nm}.timesteps"] = s.timesteps.to(torch.float32).contiguous()
                if kind in ("euler", "euler_a", "dpmpp_2m"):
                    tensors[f"{nm}.sigmas"] = s.sigmas.to(torch.float32).contiguous()
                ts_cases.append({"name": nm, "kind": kind, "spacing": spacing, "steps": n})

    prk = dict(SD1, skip_prk_steps=False)
    for spacing in ("leading", "linspace", "trailing"):
        for n in (4, 5, 6, 10, 50):  # diffusers needs >= 4 steps here
            s = make_sched("pndm", prk, {"spacing": spacing})
            s.set_timesteps(n)
            nm = f"ts_pndm_prk_{spacing}_{n}"
            tensors[f"{nm}.timesteps"] = s.timesteps.to(torch.float32).contiguous()
            ts_cases.append({"name": nm, "kind": "pndm", "spacing": spacing, "steps": n, "config": prk})

    # alphas_cumprod of both beta schedules
    tensors["alphas_cumprod.scaled_linear"] = diffusers.DDIMScheduler.from_config(SD1).alphas_cumprod.contiguous()
    tensors["alphas_cumprod.linear"] = diffusers.DDIMScheduler().alphas_cumprod.contiguous()

    # classifier-free guidance
    cfg_cases = []
    g = torch.Generator().manual_seed(7)
    for i, (scale, rescale) in enumerate([(7.5, 0.0), (7.5, 0.7), (3.0, 1.0), (1.5, 0.3)]):
        u = torch.randn(CFG_SHAPE, generator=g)
        c = torch.randn(CFG_SHAPE, generator=g) * 1.3 + 0.2
        e = u + scale * (c - u)
        if rescale > 0:
            e = rescale_noise_cfg(e, c, guidance_rescale=rescale)
        nm = f"cfg{i}"
        tensors[f"{nm}.uncond"], tensors[f"{nm}.cond"], tensors[f"{nm}.out"] = u, c, e.contiguous()
        cfg_cases.append({"name": nm, "scale": scale, "rescale": rescale, "shape": CFG_SHAPE})

    save_file(tensors, str(out / "sched.safetensors"))
    manifest = {"diffusers": diffusers.__version__, "torch": torch.__version__, "cases": cases,
                "ts_config": SD1, "timesteps": ts_cases, "cfg": cfg_cases}
    (out / "cases.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"sched: {len(cases)} chains, {len(ts_cases)} timestep lists, {len(cfg_cases)} cfg cases")


if __name__ == "__main__":
    main(pathlib.Path(__file__).resolve().parent.parent / "fixtures")
