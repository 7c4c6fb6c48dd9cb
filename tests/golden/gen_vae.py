"""VAE goldens (tests/fixtures/vae/): a tiny random AutoencoderKL run by diffusers.

Architecture as SD's (4 DownEncoderBlock2D / UpDecoderBlock2D, mid block with
single-head attention, scale factor 8) at tiny widths: block_out_channels
(8, 16, 16, 16), layers_per_block 1, norm_num_groups 4, latent_channels 4.
Weights are random (norm and bias parameters perturbed too, so nothing is at
its identity init).

  vae/         save_pretrained output: config.json (scaling_factor 0.18215) and
               F32 weights with the current attention names (to_q ... to_out.0)
  vae_legacy/  the same model with the legacy attention names (query, key,
               value, proj_attn), stored as F16, and a config.json without
               scaling_factor (the class default 0.18215 applies). Its reference
               outputs come from AutoencoderKL.from_pretrained(vae_legacy) in fp32,
               which renames the keys and widens the F16 weights.
  io.safetensors
    latents [1,4,8,12]               raw latents (as the scheduler leaves them)
    decode.<v> [1,3,64,96]           vae.decode(latents / scaling_factor).sample
    image [1,3,64,96], image2 [1,3,40,44]  encoder inputs in [-1, 1]
    mean.<v>, logvar.<v> [1,4,8,12]  vae.encode(image).latent_dist (logvar clamped)
    mean2.new, logvar2.new [1,4,5,5] encode of image2 (odd sizes after downsampling)
    rgb8.new [1,64,96,3] U8          VaeImageProcessor.postprocess(decode.new, "np")
                                     then (x * 255).round().astype(uint8)
    probe.in [1,3,4,8], probe.rgb8   hand-picked values at rounding ties and clamps
"""
import json
import pathlib

import numpy as np
import torch
from safetensors.numpy import save_file as save_np
from safetensors.torch import save_file

from diffusers import AutoencoderKL
from diffusers.image_processor import VaeImageProcessor

CONFIG = dict(
    in_channels=3, out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[8, 16, 16, 16], layers_per_block=1, act_fn="silu",
    latent_channels=4, norm_num_groups=4, sample_size=64, scaling_factor=0.18215,
)
LEGACY = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def to_rgb8(img):
    proc = VaeImageProcessor(vae_scale_factor=8)
    x = proc.postprocess(img, output_type="np")  # (x*0.5+0.5).clamp(0,1), NHWC float32
    return np.ascontiguousarray((x * 255).round().astype("uint8"))  # writer needs C order


def main(fixtures_dir):
    out = pathlib.Path(fixtures_dir) / "vae"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    vae = AutoencoderKL(**CONFIG).eval()
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    vae.save_pretrained(out / "vae", safe_serialization=True)

    # legacy names, F16 storage, no scaling_factor in the config
    leg = out / "vae_legacy"
    leg.mkdir(exist_ok=True)
    sd = {}
    for k, v in vae.state_dict().items():
        for new, old in LEGACY.items():
            if ".attentions.0." + new + "." in k:
                k = k.replace(".attentions.0." + new + ".", ".attentions.0." + old + ".")
        sd[k] = v.to(torch.float16).contiguous()
    save_file(sd, str(leg / "diffusion_pytorch_model.safetensors"))
    cfg = json.loads((out / "vae" / "config.json").read_text())
    cfg.pop("scaling_factor")
    (leg / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    vae_leg = AutoencoderKL.from_pretrained(leg, torch_dtype=torch.float32).eval()
    for (k1, p1), (k2, p2) in zip(sorted(vae.state_dict().items()), sorted(vae_leg.state_dict().items())):
        assert k1 == k2 and torch.equal(p1.half().float(), p2), k1  # legacy keys really loaded

    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 4, 8, 12, generator=g)
    image = torch.rand(1, 3, 64, 96, generator=g) * 2 - 1
    image2 = torch.rand(1, 3, 40, 44, generator=g) * 2 - 1
    t = {"latents": latents, "image": image, "image2": image2}
    with torch.no_grad():
        for tag, m in (("new", vae), ("legacy", vae_leg)):
            t[f"decode.{tag}"] = m.decode(latents / m.config.scaling_factor).sample.contiguous()
            d = m.encode(image).latent_dist
            t[f"mean.{tag}"], t[f"logvar.{tag}"] = d.mean.contiguous(), d.logvar.contiguous()
        d = vae.encode(image2).latent_dist
        t["mean2.new"], t["logvar2.new"] = d.mean.contiguous(), d.logvar.contiguous()
    # rounding probe: values whose (x*0.5+0.5)*255 lands on .5 ties, clamps, extremes
    vals = [0.0, -1.0, 1.0, 1.5, -3.0, 1 / 255, -1 / 255, 3 / 255, 5 / 255, 0.5, -0.5, 0.25]
    k = np.arange(96, dtype=np.float32)
    probe = np.array(vals + list((2 * (k[: 96 - len(vals)] + 0.5) / 255 - 1)), dtype=np.float32)
    probe = torch.from_numpy(probe.reshape(1, 3, 4, 8))
    t["probe.in"] = probe
    save_file({k: v.contiguous() for k, v in t.items()}, str(out / "io.safetensors"))
    # U8 tensors appended through the numpy writer in a second file
    save_np({"rgb8.new": to_rgb8(t["decode.new"]), "probe.rgb8": to_rgb8(probe)},
            str(out / "rgb8.safetensors"))
    print("vae: tiny AutoencoderKL", CONFIG["block_out_channels"], "written to", out)


if __name__ == "__main__":
    main(pathlib.Path(__file__).resolve().parent.parent / "fixtures")
