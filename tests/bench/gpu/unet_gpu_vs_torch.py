#!/usr/bin/env python3
"""UNet forward and soup update on one GPU: soupd's CUDA backend vs diffusers.

    python3 tests/bench/gpu/unet_gpu_vs_torch.py BUILD_DIR [--runs 10] [--no-soup]

Needs a CUDA GPU, torch with CUDA, diffusers and safetensors, and BUILD_DIR
built with the CUDA backend (bench_diffusion_cuda). Steps, all in this run
on the same GPU:
  1. the SD2.1 UNet architecture (block_out_channels 320/640/1280/1280, head
     dims 5/10/20/20, cross_attention_dim 1024, linear projections, 32
     groups) with seeded random weights, saved with save_pretrained (F16
     safetensors) into a temporary folder; inputs batch 2, latent 64x64, 77
     context tokens;
  2. diffusers: fp16 weights and activations, PyTorch SDPA attention
     (AttnProcessor2_0), one warm-up and RUNS timed forwards with
     torch.cuda.synchronize; also fp32 (what soupd computes: F32
     activations, F32 math) for a like-for-like ratio;
  3. soupd: bench_diffusion_cuda unet --dir ... (F16 weights, F32
     activations) on the same weights and inputs; outputs compared with the
     fp32 diffusers output (normalised max error printed, not asserted);
  4. soupd soup update of an SD2.1-size shard (bench_diffusion_cuda soup):
     host->device copy baseline and the update ops with their ratios.
Prints medians and ratios soupd/diffusers (< 1: soupd faster). Never fails
on a time.
"""
import argparse
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import load_file, save_file


def sd21_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(21)
    return UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=[5, 10, 20, 20],
        cross_attention_dim=1024,
        use_linear_projection=True,
        norm_num_groups=32,
    ).eval()


def time_torch(unet, sample, t, ctx, runs):
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())
    times = []
    with torch.no_grad():
        out = unet(sample, t, encoder_hidden_states=ctx).sample
        torch.cuda.synchronize()
        for _ in range(runs):
            t0 = time.perf_counter()
            out = unet(sample, t, encoder_hidden_states=ctx).sample
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build_dir")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--no-soup", action="store_true")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device for torch")
    bench = pathlib.Path(a.build_dir) / "bench_diffusion_cuda"
    if not bench.exists():
        sys.exit(f"{bench} missing: build with the CUDA backend")
    print("gpu:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    with tempfile.TemporaryDirectory() as td:
        tmp = pathlib.Path(td)
        unet = sd21_unet()
        unet_dir = tmp / "unet"
        unet.to(torch.float16).save_pretrained(unet_dir, safe_serialization=True)
        g = torch.Generator().manual_seed(5)
        sample = torch.randn(2, 4, 64, 64, generator=g)
        ctx = torch.randn(2, 77, 1024, generator=g)
        t = torch.tensor([999.0, 500.0])
        inputs = tmp / "inputs.safetensors"
        save_file({"sample": sample, "timesteps": t, "encoder_hidden_states": ctx}, inputs)

        dev = torch.device("cuda")
        u16 = unet.to(dev, torch.float16)
        ms16, _ = time_torch(u16, sample.to(dev, torch.float16), t.to(dev),
                             ctx.to(dev, torch.float16), a.runs)
        u32 = unet.to(dev, torch.float32)  # weights are the F16 values widened
        ms32, ref = time_torch(u32, sample.to(dev), t.to(dev), ctx.to(dev), a.runs)
        ref = ref.float().cpu()
        del u16, u32, unet
        torch.cuda.empty_cache()

        out = tmp / "out.safetensors"
        cmd = [str(bench), "unet", "--dir", str(unet_dir), "--inputs", str(inputs), "--out",
               str(out), "--runs", str(a.runs)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        print(p.stdout, end="")
        if p.returncode != 0:
            print(p.stderr)
            sys.exit("bench_diffusion_cuda unet failed")
        soupd_ms = float(next(l.split()[1] for l in p.stdout.splitlines()
                              if l.startswith("median_ms")))
        got = load_file(out)["out"]
        err = ((got - ref).abs().max() / ref.abs().max()).item()
        print(f"unet sd2.1 B2 64x64: diffusers fp16 SDPA {ms16:.2f} ms, diffusers fp32 SDPA "
              f"{ms32:.2f} ms, soupd cuda {soupd_ms:.2f} ms")
        print(f"ratio soupd/diffusers-fp16 {soupd_ms / ms16:.2f}  soupd/diffusers-fp32 "
              f"{soupd_ms / ms32:.2f}  (normalised max error vs fp32: {err:.2e})")
    if not a.no_soup:
        p = subprocess.run([str(bench), "soup", "--runs", "3"], capture_output=True, text=True)
        print(p.stdout, end="")
        if p.returncode != 0:
            print(p.stderr)


if __name__ == "__main__":
    main()
