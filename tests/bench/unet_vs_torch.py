#!/usr/bin/env python3
"""One UNet forward, batch 2, on the CPU: soupd vs diffusers, same thread count.

    python3 tests/bench/unet_vs_torch.py BUILD_DIR [--runs 5] [--threads 2] [--only tiny|sd21q]

Configs:
  tiny   tests/fixtures/tiny-sd2/unet (3 levels, channels 16/32/32), latent 8x8
  sd21q  the SD2.1 block structure with channel widths divided by 4:
         block_out_channels (80, 160, 320, 320), heads [5, 10, 20, 20] (head_dim
         16), cross_attention_dim 1024, layers_per_block 2, linear proj_in,
         latent 64x64. norm_num_groups is 16, not SD's 32, because 32 does not
         divide 80. Random weights (seeded), written with save_pretrained into a
         temporary folder that the C bench loads.
For each: diffusers (torch.set_num_threads(THREADS), no_grad, fp32) runs one
warm-up and RUNS timed forwards; build/bench_diffusion_unet does the same on
the same weights and inputs; the script checks the outputs agree (rel. error)
and prints both medians and the ratio soupd/diffusers (< 1: soupd faster),
also the ratio of the best runs (steadier on a shared, loaded machine).
With --profile (default on) the C bench also prints time per op class.
Never fails on a time.
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

ROOT = pathlib.Path(__file__).resolve().parents[2]


def sd21_quarter():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(21)
    return UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(80, 160, 320, 320),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=[5, 10, 20, 20],
        cross_attention_dim=1024,
        use_linear_projection=True,
        norm_num_groups=16,
    ).eval()


def bench_one(name, unet_dir, unet, hw, bench_bin, runs, threads, profile, tmp):
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(5)
    cross = unet.config.cross_attention_dim
    sample = torch.randn(2, 4, hw, hw, generator=g)
    ctx = torch.randn(2, 77, cross, generator=g)
    t = torch.tensor([999.0, 500.0])
    inputs = tmp / f"{name}_inputs.safetensors"
    save_file({"sample": sample, "timesteps": t, "encoder_hidden_states": ctx}, inputs)

    times = []
    with torch.no_grad():
        ref = unet(sample, t, encoder_hidden_states=ctx).sample
        for _ in range(runs):
            t0 = time.perf_counter()
            ref = unet(sample, t, encoder_hidden_states=ctx).sample
            times.append(time.perf_counter() - t0)
    torch_ms = 1e3 * statistics.median(times)

    out = tmp / f"{name}_out.safetensors"
    cmd = [str(bench_bin), str(unet_dir), str(inputs), str(out), str(runs), str(threads)]
    if profile:
        cmd.append("--profile")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stdout, p.stderr)
        raise SystemExit(f"{name}: bench failed")
    soupd_ms = float(next(l.split()[1] for l in p.stdout.splitlines() if l.startswith("median_ms")))
    soupd_runs = [float(l.split()[1]) for l in p.stdout.splitlines() if l.startswith("run_ms")]
    torch_min, soupd_min = 1e3 * min(times), min(soupd_runs)
    got = load_file(out)["out"]
    rel = ((got - ref).abs().max() / ref.abs().max()).item()
    print(f"== {name}: latent {hw}x{hw}, batch 2, {threads} threads, {runs} runs")
    print(f"   diffusers median {torch_ms:9.1f} ms   (runs: {', '.join(f'{1e3*x:.0f}' for x in times)})")
    print(f"   soupd     median {soupd_ms:9.1f} ms   (runs: {', '.join(f'{x:.0f}' for x in soupd_runs)})")
    print(f"   ratio soupd/diffusers: medians {soupd_ms / torch_ms:.2f}, best runs "
          f"{soupd_min / torch_min:.2f}   output rel. error {rel:.2e}")
    if profile:
        lines = p.stdout.splitlines()
        i = next((k for k, l in enumerate(lines) if l.startswith("profile")), None)
        if i is not None:
            print("\n".join("   " + l for l in lines[i:]))
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build_dir", nargs="?", default=str(ROOT / "build"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["tiny", "sd21q"])
    ap.add_argument("--no-profile", action="store_true")
    a = ap.parse_args()
    bench_bin = pathlib.Path(a.build_dir) / "bench_diffusion_unet"
    if not bench_bin.exists():
        raise SystemExit(f"{bench_bin} not built (cmake --build {a.build_dir} --target bench_diffusion_unet)")
    from diffusers import UNet2DConditionModel

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        if a.only in (None, "tiny"):
            d = ROOT / "tests/fixtures/tiny-sd2/unet"
            unet = UNet2DConditionModel.from_pretrained(d).eval()
            bench_one("tiny", d, unet, 8, bench_bin, a.runs, a.threads, not a.no_profile, tmp)
        if a.only in (None, "sd21q"):
            unet = sd21_quarter()
            d = tmp / "sd21q"
            unet.save_pretrained(d, safe_serialization=True)
            bench_one("sd21q", d, unet, 64, bench_bin, a.runs, a.threads, not a.no_profile, tmp)


if __name__ == "__main__":
    main()
