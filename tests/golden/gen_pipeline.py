"""End-to-end text-to-image goldens (tests/fixtures/pipeline/): diffusers'
StableDiffusionPipeline on the tiny SD2 and SD1 folders, fp32 on the CPU.

Every case runs the real pipeline (tokenizer, CLIP text encoder, UNet,
scheduler, classifier-free guidance, VAE decode, postprocess) with
output_type="np". Nothing depends on torch's RNG:
  - initial latents: N(0,1) values from soupd's Philox stream
    (server/diffusion/philox.h), image b from seed + b on stream 0, passed as
    `latents=` (the pipeline multiplies them by init_noise_sigma, as soupd
    does with its own latents);
  - scheduler noise (Euler ancestral, DDIM with eta > 0): the randn_tensor of
    the scheduler modules is monkeypatched to return soupd's Philox noise of
    the current step (image b: seed + b, stream (1 << 32) | step), shape
    [n, 4, h, w].
clip_skip: diffusers' encode_prompt takes hidden_states[-(clip_skip + 1)] and
applies the final layer norm; the negative prompt ignores clip_skip.
Philox4x32-10 and its Box-Muller transform are written here from their
definition (philox.h) and checked against the Random123 known answers.

Files:
  cases.json           manifest: per case the model folder, the gen_params
                       (prompt, negative_prompt or null, steps, guidance_scale,
                       guidance_rescale, eta, width, height, seed, n,
                       scheduler or null, timestep_spacing, prediction_type,
                       clip_skip) exactly as the C test passes them.
  pipeline.safetensors per case "<case>.<what>":
      latents      [n,4,h,w] F32  the N(0,1) initial latents (before * sigma)
      embeds       [2 or 1,77,D] F32 the text states of one image ([neg, pos]
                   with guidance, [pos] without)
      image        [n,H,W,3] F32  output_type="np" (denormalised, clamped)
      rgb          [n,H,W,3] U8   (image * 255).round().astype(uint8), the
                   numpy_to_pil path (round half to even)
Deterministic; needs tiny-sd1/ and tiny-sd2/ (gen_models.py).
"""
import json
import pathlib
import types

import numpy as np
import torch
from safetensors.torch import save_file

import diffusers
from diffusers.schedulers import scheduling_ddim as ddim_mod
from diffusers.schedulers import scheduling_euler_ancestral_discrete as ea_mod

CLASSES = {
    "ddim": diffusers.DDIMScheduler,
    "euler": diffusers.EulerDiscreteScheduler,
    "euler_a": diffusers.EulerAncestralDiscreteScheduler,
    "dpmpp_2m": diffusers.DPMSolverMultistepScheduler,
    "pndm": diffusers.PNDMScheduler,
}

PROMPT = "a photo of an astronaut riding a horse on mars, highly detailed"
NEG = "blurry, low quality, watermark"


def case(name, model, **kw):
    g = {"prompt": PROMPT, "negative_prompt": NEG, "steps": 5, "guidance_scale": 7.5,
         "guidance_rescale": 0.0, "eta": 0.0, "width": 64, "height": 64, "seed": 1, "n": 1,
         "scheduler": None, "timestep_spacing": None, "prediction_type": None, "clip_skip": 0}
    g.update(kw)
    return {"name": name, "model": model, "params": g}


CASES = [
    # tiny-sd2: DDIMScheduler config (leading, epsilon), latent 8x8 default
    case("sd2_ddim", "tiny-sd2", seed=42),
    case("sd2_ddim_v_64x48", "tiny-sd2", width=64, height=48, prediction_type="v_prediction",
         seed=7),
    case("sd2_euler_rescale", "tiny-sd2", scheduler="euler", steps=4, guidance_rescale=0.7,
         width=48, height=40, seed=3),
    case("sd2_ddim_eta", "tiny-sd2", eta=0.5, steps=4, width=40, height=48, seed=11),
    case("sd2_euler_a_n2", "tiny-sd2", scheduler="euler_a", steps=4, n=2, width=48, height=40,
         seed=1234567890123),
    case("sd2_dpm_trailing_v", "tiny-sd2", scheduler="dpmpp_2m", timestep_spacing="trailing",
         prediction_type="v_prediction", steps=5, width=40, height=40, seed=5),
    # tiny-sd1: PNDMScheduler config (leading, epsilon, skip_prk_steps)
    case("sd1_pndm_64x48", "tiny-sd1", width=64, height=48, seed=2),
    case("sd1_dpm", "tiny-sd1", scheduler="dpmpp_2m", steps=6, width=48, height=48, seed=9),
    case("sd1_euler_clipskip", "tiny-sd1", scheduler="euler", steps=4, clip_skip=1,
         negative_prompt=None, width=40, height=48, seed=13),
    case("sd1_ddim_nocfg", "tiny-sd1", scheduler="ddim", guidance_scale=1.0, steps=4,
         negative_prompt=None, width=48, height=40, seed=21),
    case("sd1_pndm_v_n2", "tiny-sd1", prediction_type="v_prediction", steps=4, n=2, width=40,
         height=40, seed=17, guidance_scale=5.0),
    # the pipeline defaults (50 steps, the config's scheduler), error accumulation
    case("sd2_defaults_50", "tiny-sd2", steps=50, seed=50),
    case("sd1_pndm_50", "tiny-sd1", steps=50, width=48, height=48, seed=51),
]

# ---- Philox4x32-10 + Box-Muller (philox.h), vectorised over blocks ----
M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF


def philox(ctr, key):
    """ctr: 4 arrays of uint64 (32-bit values); key: 2 ints. Returns 4 arrays."""
    c0, c1, c2, c3 = [np.asarray(c, dtype=np.uint64) for c in ctr]
    k0, k1 = key[0], key[1]
    for r in range(10):
        if r:
            k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
        p0 = np.uint64(M0) * c0
        p1 = np.uint64(M1) * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & np.uint64(MASK)
        hi1, lo1 = p1 >> np.uint64(32), p1 & np.uint64(MASK)
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0
    return c0, c1, c2, c3


def philox_kat():
    kat = [
        ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
        ([MASK] * 4, [MASK, MASK], [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
        ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
         [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
    ]
    for ctr, key, want in kat:
        got = [int(np.asarray(x).ravel()[0]) for x in philox([[c] for c in ctr], key)]
        assert got == want, (got, want)


def philox_normal(seed, stream, n):
    """The n normals of (seed, stream) from element 0, as float32."""
    nb = (n + 3) // 4
    blocks = np.arange(nb, dtype=np.uint64)
    ctr = [blocks & np.uint64(MASK), blocks >> np.uint64(32),
           np.full(nb, stream & MASK, dtype=np.uint64), np.full(nb, stream >> 32, dtype=np.uint64)]
    x = philox(ctr, [seed & MASK, (seed >> 32) & MASK])
    two_m32 = 1.0 / 4294967296.0
    out = np.empty((nb, 4), dtype=np.float64)
    for a, b, w in ((x[0], x[1], 0), (x[2], x[3], 2)):
        u1 = (a.astype(np.float64) + 1.0) * two_m32
        u2 = b.astype(np.float64) * two_m32
        r = np.sqrt(-2.0 * np.log(u1))
        th = 2.0 * np.pi * u2
        out[:, w] = r * np.cos(th)
        out[:, w + 1] = r * np.sin(th)
    return out.reshape(-1)[:n].astype(np.float32)


def philox_batch(seed, stream, n_img, shape):
    per = int(np.prod(shape))
    return torch.from_numpy(np.stack(
        [philox_normal(seed + b, stream, per).reshape(shape) for b in range(n_img)]))


def run(pipes, c, tensors, fixtures):
    p = c["params"]
    pipe = pipes[c["model"]]
    base_cfg = pipes[c["model"] + ".sched"]
    kind = p["scheduler"] or {v.__name__: k for k, v in CLASSES.items()}[base_cfg["_class_name"]]
    ov = {}
    if p["timestep_spacing"]:
        ov["timestep_spacing"] = p["timestep_spacing"]
    if p["prediction_type"]:
        ov["prediction_type"] = p["prediction_type"]
    pipe.scheduler = CLASSES[kind].from_config(pipes[c["model"] + ".base"].config, **ov)
    H, W, n, seed = p["height"], p["width"], p["n"], p["seed"]
    h, w = H // pipe.vae_scale_factor, W // pipe.vae_scale_factor
    shape = (4, h, w)
    latents = philox_batch(seed, 0, n, shape)

    state = {"step": 0}

    def fake_randn(shp, *a, **k):
        assert tuple(shp) == (n,) + shape, shp
        return philox_batch(seed, (1 << 32) | state["step"], n, shape)

    def on_step(pipe_, i, t, kw):
        state["step"] = i + 1
        return {}

    o_ddim, o_ea = ddim_mod.randn_tensor, ea_mod.randn_tensor
    ddim_mod.randn_tensor = ea_mod.randn_tensor = fake_randn
    try:
        out = pipe(
            prompt=p["prompt"], negative_prompt=p["negative_prompt"],
            num_inference_steps=p["steps"], guidance_scale=p["guidance_scale"],
            guidance_rescale=p["guidance_rescale"], eta=p["eta"], height=H, width=W,
            num_images_per_prompt=n, latents=latents.clone(), output_type="np",
            clip_skip=p["clip_skip"] or None, callback_on_step_end=on_step,
        )
    finally:
        ddim_mod.randn_tensor, ea_mod.randn_tensor = o_ddim, o_ea
    image = out.images  # [n, H, W, 3] float32 in [0, 1]
    assert image.shape == (n, H, W, 3) and image.dtype == np.float32
    rgb = (image * 255).round().astype("uint8")
    with torch.no_grad():
        pos, neg = pipe.encode_prompt(p["prompt"], "cpu", 1, p["guidance_scale"] > 1,
                                      p["negative_prompt"], clip_skip=p["clip_skip"] or None)
    embeds = torch.cat([neg, pos]) if neg is not None else pos
    nm = c["name"]
    tensors[f"{nm}.latents"] = latents.contiguous()
    tensors[f"{nm}.embeds"] = embeds.float().contiguous()
    tensors[f"{nm}.image"] = torch.from_numpy(np.ascontiguousarray(image))
    tensors[f"{nm}.rgb"] = torch.from_numpy(np.ascontiguousarray(rgb))
    c = dict(c)
    c["timesteps"] = [float(t) for t in pipe.scheduler.timesteps]
    c["init_noise_sigma"] = float(pipe.scheduler.init_noise_sigma)
    return c


def main(fixtures_dir):
    fixtures = pathlib.Path(fixtures_dir)
    out = fixtures / "pipeline"
    out.mkdir(parents=True, exist_ok=True)
    philox_kat()
    torch.manual_seed(0)
    pipes = {}
    for m in ("tiny-sd2", "tiny-sd1"):
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(
            str(fixtures / m), torch_dtype=torch.float32, safety_checker=None,
            requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        te = pipe.text_encoder
        if not hasattr(te, "text_model"):
            # diffusers 0.42.1's clip_skip line reads text_encoder.text_model.final_layer_norm,
            # which transformers 5.24's CLIPTextModel no longer has: give it that path
            # (outside torch's module registry, so nothing else changes).
            object.__setattr__(te, "text_model", types.SimpleNamespace(
                final_layer_norm=te.final_layer_norm))
        pipes[m + ".base"] = pipe.scheduler
        pipes[m] = pipe
        pipes[m + ".sched"] = json.loads((fixtures / m / "scheduler/scheduler_config.json").read_text())
    tensors, manifest = {}, []
    for c in CASES:
        manifest.append(run(pipes, c, tensors, fixtures))
    save_file(tensors, str(out / "pipeline.safetensors"))
    doc = {"diffusers": diffusers.__version__, "torch": torch.__version__, "cases": manifest}
    (out / "cases.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"pipeline: {len(manifest)} cases")


if __name__ == "__main__":
    main(pathlib.Path(__file__).resolve().parent.parent / "fixtures")
