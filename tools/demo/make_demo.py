"""Regenerates the demo Diffusion Soup from nothing: the procedural dataset,
a VAE, a base UNet, one shard per domain, the combined paragon and the judge.

    pip install -r tools/demo/requirements.txt
    python3 tools/demo/make_demo.py [--out deploy/demo] [--quick] [--keep PARTS]

Writes, under --out:
    model/             the base pipeline (diffusers layout, F16): soupd's embedded default
    shards/NAME.safetensors   each domain shard (a full UNet, F16), registers as it is
    paragon.safetensors       the base fine-tuned on the union of the shards' data
    judge.safetensors         the judge (tools/demo/judge.py reads it with numpy)
    training.json             what was measured while training
Deterministic on one machine (fixed seeds, CPU, 2 threads); another CPU or
BLAS may round differently. --quick runs a few steps of everything (a smoke
test of the script, not a model).

The text encoder is tiny-sd2's (tests/fixtures): a random CLIP text model with
the real CLIP vocabulary, frozen. Every UNet learns to read its features.
"""
import argparse
import json
import pathlib
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import shapes  # noqa: E402
from judge import CHANNELS, HEADS, Judge, score  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "tiny-sd2"
T0 = time.time()
SHARD_STEPS = 800  # each shard's fine-tuning; the paragon gets 4x (the same budget)
KEEPABLE = {"vae", "base", "shards", "judge"}
GLIMPSE = 40  # images of each shard's domain in the base's training data


def log(msg):
    print(f"[{time.time() - T0:7.1f}s] {msg}", flush=True)


# ---------------------------------------------------------------- data
def dataset(quick):
    n = dict(base=6000, shard=3000, val=240, test=240, glimpse=GLIMPSE)
    if quick:
        n = dict(base=256, shard=128, val=32, test=32, glimpse=4)
    d = {}
    for dom in shapes.DOMAINS:
        ntr = n["base"] if dom == "base" else n["shard"]
        d[dom] = {s: shapes.make(dom, k, s) for s, k in
                  (("train", ntr), ("val", n["val"]), ("test", n["test"]))}
        if dom != "base":  # other seeds than the shard's own training images
            d[dom]["glimpse"] = shapes.make(dom, n["glimpse"], "train", seed0=1_000_000)
    return d


def head(part, k):
    """The first k examples of a (images, captions, attributes) split."""
    return tuple(x[:k] for x in part)


def base_parts(data):
    """The generic data the base is trained on: the base domain and a glimpse
    (GLIMPSE images) of every shard's domain, as a pretrained model has seen a
    little of everything."""
    return [data["base"]["train"]] + [data[d]["glimpse"] for d in shapes.SHARDS]


def shard_parts(data, doms):
    """A fine-tune's data: its domains' training images, each mixed 1:1 with
    generic base images (replay), so a shard learns its domain without
    forgetting what the base draws."""
    out = []
    for d in doms:
        tr = data[d]["train"]
        out += [tr, head(data["base"]["train"], len(tr[0]))]
    return out


# ---------------------------------------------------------------- VAE
def build_vae():
    from diffusers import AutoencoderKL
    torch.manual_seed(1)
    return AutoencoderKL(in_channels=3, out_channels=3,
                         down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=(32, 32, 64, 64), layers_per_block=1,
                         latent_channels=4, norm_num_groups=8, sample_size=64)


def to_t(imgs):
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_u8(x):
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def f16_roundtrip_(m):
    """Weights as they will be served: rounded to F16, computed in F32."""
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.half().float())
    return m


def warmup_cosine(opt, steps):
    import math
    warm = max(1, steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, 0.55 + 0.45 * math.cos(math.pi * s / steps)))


def train_vae(data, steps, bs=24):
    vae = build_vae()
    x_all = np.concatenate([data[d]["train"][0] for d in data])
    g = torch.Generator().manual_seed(2)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0)
    sched = warmup_cosine(opt, steps)
    for s in range(steps):
        idx = torch.randint(0, len(x_all), (bs,), generator=g).numpy()
        x = to_t(x_all[idx])
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        y = vae.decode(z).sample
        loss = F.mse_loss(y, x) + 0.5 * (y - x).abs().mean() + 1e-6 * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if s % 100 == 0 or s == steps - 1:
            log(f"vae step {s}/{steps} loss {loss.item():.4f}")
    vae.eval()
    return f16_roundtrip_(vae)


@torch.no_grad()
def encode(vae, imgs):
    m, sd = [], []
    for i in range(0, len(imgs), 256):
        post = vae.encode(to_t(imgs[i:i + 256])).latent_dist
        m.append(post.mean)
        sd.append(post.std)
    return torch.cat(m), torch.cat(sd)


@torch.no_grad()
def decode(vae, z):
    return to_u8(torch.cat([vae.decode(z[i:i + 64]).sample for i in range(0, len(z), 64)]))


# ---------------------------------------------------------------- text
class Text:
    def __init__(self):
        from transformers import CLIPTextModel, CLIPTokenizer
        self.tok = CLIPTokenizer.from_pretrained(FIXTURE / "tokenizer")
        self.te = CLIPTextModel.from_pretrained(FIXTURE / "text_encoder").float().eval()
        self.cache = {}

    @torch.no_grad()
    def __call__(self, caps):
        new = sorted({c for c in caps if c not in self.cache})
        if new:
            ids = self.tok(new, padding="max_length", max_length=77, truncation=True,
                           return_tensors="pt").input_ids
            h = self.te(ids).last_hidden_state
            for c, e in zip(new, h):
                self.cache[c] = e
        return torch.stack([self.cache[c] for c in caps])


# ---------------------------------------------------------------- UNet
def unet_config():
    return dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                block_out_channels=(32, 64, 64),
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
                use_linear_projection=True)


def build_scheduler():
    from diffusers import DDIMScheduler
    return DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                         steps_offset=1, prediction_type="epsilon")


class Latents:
    """A domain's training set as latent distributions and caption embeddings."""

    def __init__(self, vae, text, parts):
        imgs = np.concatenate([p[0] for p in parts])
        caps = sum([p[1] for p in parts], [])
        self.mean, self.std = encode(vae, imgs)
        self.emb = text(caps)
        self.n = len(caps)


def train_unet(unet, lat, steps, lr, sf, seed, text, bs=64, tag=""):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ac = build_scheduler().alphas_cumprod
    uncond = text([""])[0]
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    unet.train()
    for s in range(steps):
        idx = torch.randint(0, lat.n, (bs,), generator=g)
        z = (lat.mean[idx] + lat.std[idx] * torch.randn(lat.mean[idx].shape, generator=g)) * sf
        t = torch.randint(0, 1000, (bs,), generator=g)
        noise = torch.randn(z.shape, generator=g)
        a = ac[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * z + (1 - a).sqrt() * noise
        cond = lat.emb[idx].clone()
        drop = torch.rand(bs, generator=g) < 0.1
        cond[drop] = uncond
        loss = F.mse_loss(unet(noisy, t, cond).sample, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        d = min(0.995, (1 + s) / (10 + s))
        with torch.no_grad():
            for k, v in unet.state_dict().items():
                ema[k].mul_(d).add_(v.detach(), alpha=1 - d)
        if s % 200 == 0 or s == steps - 1:
            log(f"unet {tag} step {s}/{steps} loss {loss.item():.4f}")
    unet.load_state_dict(ema)
    unet.eval()
    return f16_roundtrip_(unet)


@torch.no_grad()
def sample(unet, vae, text, caps, sf, seed, steps=20, cfg=5.0):
    sch = build_scheduler()
    sch.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((len(caps), 4, 8, 8), generator=g)
    c = torch.cat([text([""] * len(caps)), text(caps)])
    for t in sch.timesteps:
        e = unet(torch.cat([z, z]), t, c).sample
        eu, ec = e.chunk(2)
        z = sch.step(eu + cfg * (ec - eu), t, z).prev_sample
    return decode(vae, z / sf)


# ---------------------------------------------------------------- judge
class JudgeNet(nn.Module):
    def __init__(self):
        super().__init__()
        for i in range(4):
            setattr(self, f"conv{i}", nn.Conv2d(CHANNELS[i], CHANNELS[i + 1], 3, padding=1))
        self.head = nn.Linear(CHANNELS[4], sum(len(h[1]) for h in HEADS))

    def forward(self, x):
        for i in range(4):
            x = F.relu(getattr(self, f"conv{i}")(x))
            if i < 3:
                x = F.max_pool2d(x, 2)
        return self.head(x.amax(dim=(2, 3)))


def labels(attrs):
    return torch.tensor([[labs.index(a[name]) for name, labs in HEADS] for a in attrs])


def train_judge(data, vae, steps, bs=64):
    imgs = np.concatenate([data[d]["train"][0] for d in data])
    attrs = sum([data[d]["train"][2] for d in data], [])
    # Half the examples as the VAE draws them: the judge reads generated images.
    k = len(imgs) // 2
    m, sd = encode(vae, imgs[:k])
    recon = decode(vae, m)
    imgs = np.concatenate([imgs, recon])
    y = labels(attrs + attrs[:k])
    torch.manual_seed(5)
    g = torch.Generator().manual_seed(6)
    net = JudgeNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = warmup_cosine(opt, steps)
    for s in range(steps):
        idx = torch.randint(0, len(imgs), (bs,), generator=g).numpy()
        z = net(to_t(imgs[idx]))
        loss, o = 0, 0
        for j, (_, labs) in enumerate(HEADS):
            loss = loss + F.cross_entropy(z[:, o:o + len(labs)], y[idx, j])
            o += len(labs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if s % 200 == 0 or s == steps - 1:
            log(f"judge step {s}/{steps} loss {loss.item():.4f}")
    return net


def judge_accuracy(judge, imgs, attrs):
    pred = judge.predict(imgs)
    acc = {name: float(np.mean([p[name] == a[name] for p, a in zip(pred, attrs)])) for name, _ in HEADS}
    acc["all3"] = float(np.mean([score(p, a) for p, a in zip(pred, attrs)]))
    return acc


# ---------------------------------------------------------------- saving
def save_unet_file(unet, path, meta):
    from safetensors.torch import save_file
    sd = {k: v.detach().half().contiguous() for k, v in unet.state_dict().items()}
    save_file(sd, str(path), metadata={k: str(v) for k, v in meta.items()})


def load_unet_file(path):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file
    u = UNet2DConditionModel(**unet_config())
    u.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return u.eval()


def save_pipeline(unet, vae, out):
    import copy
    dst = out / "model"
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    copy.deepcopy(unet).half().save_pretrained(dst / "unet", safe_serialization=True)
    copy.deepcopy(vae).half().save_pretrained(dst / "vae", safe_serialization=True)
    build_scheduler().save_pretrained(dst / "scheduler")
    for sub in ("text_encoder", "tokenizer"):
        shutil.copytree(FIXTURE / sub, dst / sub)
    shutil.copy(FIXTURE / "model_index.json", dst / "model_index.json")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "deploy" / "demo"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep", default="",
                    help="comma list of parts already under OUT to load, not train: "
                         "vae, base (needs vae), shards (the shards and the paragon; needs base), "
                         "judge (needs vae)")
    args = ap.parse_args()
    keep = set(filter(None, args.keep.split(",")))
    if keep - KEEPABLE or ("base" in keep and "vae" not in keep) or \
            ("shards" in keep and "base" not in keep) or ("judge" in keep and "vae" not in keep):
        ap.error(f"--keep {args.keep}: parts are {', '.join(sorted(KEEPABLE))}; "
                 "base and judge need vae, shards need base")
    out = pathlib.Path(args.out)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    q = args.quick
    steps = dict(vae=20, base=20, shard=10, judge=20) if q else \
        dict(vae=1500, base=3000, shard=SHARD_STEPS, judge=1500)
    steps["paragon"] = steps["shard"] * len(shapes.SHARDS)
    rec = {"steps": steps, "unet_config": unet_config()}

    data = dataset(q)
    log(f"dataset: {', '.join('%s %d' % (d, len(v['train'][0])) for d, v in data.items())} training images")
    from diffusers import AutoencoderKL, UNet2DConditionModel
    if "vae" in keep:
        vae = AutoencoderKL.from_pretrained(out / "model" / "vae").float().eval()
    else:
        vae = train_vae(data, steps["vae"])
    test_imgs = np.concatenate([data[d]["test"][0] for d in data])
    m, _ = encode(vae, test_imgs)
    rec["vae_test_mse"] = float(np.mean((decode(vae, m).astype(np.float32) - test_imgs) ** 2) / 127.5 ** 2 / 4)
    all_m = torch.cat([encode(vae, data[d]["train"][0][:500])[0] for d in data])
    sf = float(1 / all_m.std())
    vae.register_to_config(scaling_factor=sf)
    rec["scaling_factor"] = sf
    log(f"vae: test mse {rec['vae_test_mse']:.5f} (images in [-1,1]), scaling factor {sf:.5f}")
    rec["vae_test_mse_by_domain"] = {}
    for d in data:
        x = data[d]["test"][0]
        e = float(np.mean((decode(vae, encode(vae, x)[0]).astype(np.float32) - x) ** 2) / 127.5 ** 2 / 4)
        rec["vae_test_mse_by_domain"][d] = e
    log("vae test mse by domain: " + " ".join(f"{d} {e:.5f}" for d, e in rec["vae_test_mse_by_domain"].items()))

    text = Text()
    torch.manual_seed(3)
    base = UNet2DConditionModel(**unet_config())
    rec["unet_params"] = sum(p.numel() for p in base.parameters())
    lat = {d: Latents(vae, text, shard_parts(data, [d])) for d in shapes.SHARDS}
    lat["base"] = Latents(vae, text, base_parts(data))
    if "base" in keep:
        base = UNet2DConditionModel.from_pretrained(out / "model" / "unet").float().eval()
    else:
        base = train_unet(base, lat["base"], steps["base"], 1e-3, sf, 10, text, tag="base")
        save_pipeline(base, vae, out)
    base_sd = {k: v.clone() for k, v in base.state_dict().items()}

    models = {"base": base}
    if "shards" in keep:
        for dom in shapes.SHARDS + ["paragon"]:
            f = out / ("paragon.safetensors" if dom == "paragon" else f"shards/{dom}.safetensors")
            models[dom] = load_unet_file(f)
    for i, dom in enumerate([] if "shards" in keep else shapes.SHARDS):
        u = UNet2DConditionModel(**unet_config())
        u.load_state_dict(base_sd)
        u = train_unet(u, lat[dom], steps["shard"], 3e-4, sf, 20 + i, text, tag=dom)
        save_unet_file(u, out / "shards" / f"{dom}.safetensors", {"domain": dom})
        models[dom] = u
    if "shards" not in keep:
        u = UNet2DConditionModel(**unet_config())
        u.load_state_dict(base_sd)
        union = Latents(vae, text, shard_parts(data, shapes.SHARDS))
        u = train_unet(u, union, steps["paragon"], 3e-4, sf, 30, text, tag="paragon")
        save_unet_file(u, out / "paragon.safetensors", {"domain": "+".join(shapes.SHARDS)})
        models["paragon"] = u

    if "judge" not in keep:
        net = train_judge(data, vae, steps["judge"])
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "judge.safetensors"))
    judge = Judge(out / "judge.safetensors")
    test_attrs = sum([data[d]["test"][2] for d in data], [])
    rec["judge_test_accuracy"] = judge_accuracy(judge, test_imgs, test_attrs)
    log(f"judge accuracy on real test images (held-out combinations): {rec['judge_test_accuracy']}")

    # A first look in diffusers: each model on each domain's test prompts.
    rec["diffusers_scores"] = {}
    for name, u in models.items():
        row = {}
        for dom in shapes.DOMAINS:
            caps, attrs = data[dom]["test"][1][:16], data[dom]["test"][2][:16]
            imgs = sample(u, vae, text, caps, sf, seed=40)
            row[dom] = float(np.mean([score(p, a) for p, a in zip(judge.predict(imgs), attrs)]))
        rec["diffusers_scores"][name] = row
        log(f"diffusers, 16 images a cell: {name:9s} " + " ".join(f"{d} {v:.2f}" for d, v in row.items()))
    rec["seconds"] = round(time.time() - T0, 1)
    (out / "training.json").write_text(json.dumps(rec, indent=2) + "\n")
    for f in out.rglob("*"):
        f.chmod(0o755 if f.is_dir() else 0o644)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"done: {size / 1e6:.1f} MB under {out}")


if __name__ == "__main__":
    main()
