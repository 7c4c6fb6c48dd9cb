#!/usr/bin/env python3
"""End-to-end generation through the real daemon on the CPU: latency and
images per minute, one client and several concurrent clients, without and
with batching, and the share of time in text encoding, denoising, decoding
and PNG. A benchmark, not a test: it never fails on a time.

    python3 tests/bench/bench_generate.py [--build build] [--runs 5] [--clients 4]
                                          [--only tiny|mid]

Models:
  tiny  the embedded default model (tests/fixtures/tiny-sd2), 64x64, 20 steps
  mid   the SD2.1 block structure with channel widths divided by 4 (UNet
        80/160/320/320, heads 5/10/20/20, cross-attention 1024), a 2-layer
        1024-wide CLIP text encoder, a VAE with widths 32/64/128/128; random
        weights made here with diffusers (needs torch), 256x256, 10 steps.
The baseline of the batching ratio is the same daemon binary with
--max-batch 1, run in the same script on the same machine.
"""
import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Soupd:
    def __init__(self, binary, model, data, extra):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(data.parent / (data.name + ".log"), "wb")
        self.p = subprocess.Popen([binary, "--listen", f"127.0.0.1:{self.port}", "--data-dir",
                                   str(data), "--model", str(model), "--max-steps", "1000",
                                   "--job-timeout-s", "3600", "--queue-max", "64", *extra],
                                  stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(3000):
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.token = (data / "admin.token").read_text().strip()

    def gen(self, body):
        r = requests.post(self.url + "/generate", json=body, timeout=3600,
                          headers={"Authorization": f"Bearer {self.token}"})
        r.raise_for_status()
        return r.json()

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(60)
        self.log.close()


def make_mid_model(dst):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(21)
    tiny = ROOT / "tests/fixtures/tiny-sd2"
    shutil.copytree(tiny / "tokenizer", dst / "tokenizer")
    shutil.copytree(tiny / "scheduler", dst / "scheduler")
    shutil.copy(tiny / "model_index.json", dst / "model_index.json")
    UNet2DConditionModel(
        sample_size=32, block_out_channels=(80, 160, 320, 320), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024,
        use_linear_projection=True, norm_num_groups=16).save_pretrained(dst / "unet")
    CLIPTextModel(CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=2,
                                 num_attention_heads=16, hidden_act="gelu", vocab_size=49408,
                                 max_position_embeddings=77, pad_token_id=1, bos_token_id=49406,
                                 eos_token_id=49407)).save_pretrained(dst / "text_encoder")
    AutoencoderKL(block_out_channels=(32, 64, 128, 128),
                  down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4,
                  norm_num_groups=32, layers_per_block=2).save_pretrained(dst / "vae")
    DDIMScheduler.from_pretrained(tiny / "scheduler")  # the config is valid as is


def run_model(name, binary, model, shape, runs, clients, tmp):
    base = {"prompt": "a lighthouse on a cliff at dusk", "negative_prompt": "blurry", **shape}
    out = {}
    for mb in (1, 4):
        d = Soupd(binary, model, tmp / f"{name}-b{mb}", ["--max-batch", str(mb)])
        try:
            d.gen({**base, "seed": 0})  # warm-up
            lat, parts = [], []
            if mb == 1:
                for i in range(runs):
                    t0 = time.perf_counter()
                    j = d.gen({**base, "seed": 1 + i})
                    lat.append(time.perf_counter() - t0)
                    parts.append(j["timings"])
                out["single_s"] = statistics.median(lat)
                out["parts"] = {k: statistics.median(p[k] for p in parts)
                                for k in ("text_ms", "denoise_ms", "decode_ms", "png_ms",
                                          "total_ms")}
            per_client = max(1, runs // 2)
            done = []

            def client(c):
                for i in range(per_client):
                    d.gen({**base, "seed": 1000 * c + i})
                    done.append(1)

            t0 = time.perf_counter()
            ts = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
            [t.start() for t in ts]
            [t.join() for t in ts]
            wall = time.perf_counter() - t0
            out[f"concurrent_ipm_b{mb}"] = 60 * len(done) / wall
            out[f"concurrent_s_b{mb}"] = wall
        finally:
            d.stop()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--only", choices=["tiny", "mid"])
    a = ap.parse_args()
    binary = str(pathlib.Path(a.build) / "soupd")
    with tempfile.TemporaryDirectory() as td:
        tmp = pathlib.Path(td)
        models = []
        if a.only in (None, "tiny"):
            models.append(("tiny", ROOT / "tests/fixtures/tiny-sd2",
                           {"width": 64, "height": 64, "steps": 20}))
        if a.only in (None, "mid"):
            mid = tmp / "mid"
            mid.mkdir()
            make_mid_model(mid)
            models.append(("mid", mid, {"width": 256, "height": 256, "steps": 10}))
        print(f"cpu: {os.cpu_count()} cores; {a.runs} runs, {a.clients} concurrent clients")
        for name, model, shape in models:
            r = run_model(name, binary, model, shape, a.runs, a.clients, tmp)
            p = r["parts"]
            tot = p["total_ms"]
            print(f"\n[{name}] {shape['width']}x{shape['height']}, {shape['steps']} steps")
            print(f"  one client: median latency {r['single_s'] * 1e3:.0f} ms, "
                  f"{60 / r['single_s']:.1f} images/min")
            print("  time share: " + ", ".join(
                f"{k[:-3]} {100 * p[k] / tot:.1f}%" for k in
                ("text_ms", "denoise_ms", "decode_ms", "png_ms")))
            b1, b4 = r["concurrent_ipm_b1"], r["concurrent_ipm_b4"]
            print(f"  {a.clients} clients: {b1:.1f} images/min without batching, "
                  f"{b4:.1f} with --max-batch 4 (ratio {b4 / b1:.2f})")
            print("  json: " + json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
