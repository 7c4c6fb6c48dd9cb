"""Builds the two tiny random-initialised Stable Diffusion model folders.

    tests/fixtures/tiny-sd2/   SD2-style: linear proj_in, per-block head list,
                               GELU text encoder, pad token "!", DDIM (SD2.1-base)
    tests/fixtures/tiny-sd1/   SD1-style: conv proj_in, one head count for all
                               blocks, quick-GELU text encoder, pad token
                               "<|endoftext|>", PNDM (SD1.5)

Both are full diffusers folders in the save_pretrained layout (model_index.json,
unet/, text_encoder/, tokenizer/, vae/, scheduler/; safetensors only). The
tokenizer is the real CLIP BPE vocabulary (49408 entries) rebuilt from the
merges file that open_clip ships, and is checked against open_clip's tokenizer.
The text encoder is stored in F16 (its 49408-row embedding dominates the size);
UNet and VAE in F32. Every parameter gets a seeded random perturbation on top
of the default initialisation, so that norm scales/biases are not 1/0 and a
kernel that ignores them fails the goldens.

Deterministic: fixed seeds, CPU. Run through make_goldens.py (main(fixtures)).
"""
import gzip
import json
import os
import pathlib
import shutil
import tempfile

import torch

VOCAB_SIZE = 49408
N_MERGES = 49152 - 256 - 2


def bytes_to_unicode():
    """The byte -> printable unicode character table of GPT-2/CLIP BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_clip_vocab(dst: pathlib.Path):
    """Writes vocab.json and merges.txt exactly as CLIP's vocabulary is built."""
    import open_clip

    gz = pathlib.Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(gz).read().decode("utf-8").split("\n")
    merges = lines[1 : N_MERGES + 1]
    assert len(merges) == N_MERGES
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == VOCAB_SIZE and len(set(vocab)) == VOCAB_SIZE
    with open(dst / "vocab.json", "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(dst / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.write("\n".join(merges) + "\n")


def write_tokenizer(dst: pathlib.Path, pad_token: str):
    """The tokenizer folder in the layout of the Stable Diffusion repositories:
    vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json
    (transformers 5 would save only a tokenizer.json)."""
    dst.mkdir(parents=True, exist_ok=True)
    write_clip_vocab(dst)
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": pad_token,
        "unk_token": "<|endoftext|>",
    }
    with open(dst / "special_tokens_map.json", "w") as f:
        json.dump(special, f, indent=2)
        f.write("\n")
    config = dict(
        add_prefix_space=False,
        do_lower_case=True,
        errors="replace",
        model_max_length=77,
        tokenizer_class="CLIPTokenizer",
        **special,
    )
    with open(dst / "tokenizer_config.json", "w") as f:
        json.dump(dict(sorted(config.items())), f, indent=2)
        f.write("\n")


def check_tokenizer(folder: pathlib.Path, pad_token: str):
    """transformers' CLIPTokenizer from the saved folder == open_clip's tokenizer.

    Strings holding SD2's pad token "!" are skipped: transformers treats the
    special token as an unsplittable added token, so "mat!!" becomes
    "mat", "!", "!" (ids 0, 0) where open_clip has "!!</w>" (748). That is the
    reference behaviour the C tokenizer must copy, not a vocabulary error."""
    import open_clip
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(folder)
    assert len(tok) == VOCAB_SIZE, len(tok)
    ref = open_clip.get_tokenizer("ViT-L-14")
    for s in [
        "a photograph of an astronaut riding a horse",
        "A Cat, sitting on the mat!! (oil painting), 4k",
        "don't stop; it's 12:30pm   naïve café",
        "",
    ]:
        if pad_token == "!" and "!" in s:
            continue
        ours = tok(s, padding="max_length", max_length=77, truncation=True).input_ids
        theirs = ref([s])[0].tolist()
        n = theirs.index(49407) + 1  # open_clip pads with 0 after <|endoftext|>
        assert ours[:n] == theirs[:n], (s, ours[:n], theirs[:n])


def perturb_(module, seed: int, scale: float = 0.1):
    """Adds seeded noise to every 1-D parameter (norm scales, biases) and a
    small relative perturbation to the others, so nothing is exactly 0 or 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if p.ndim == 1:
                p.add_(scale * noise.to(p.dtype))
            else:
                p.mul_(1 + scale * noise.to(p.dtype))


def unet_config(kind: str) -> dict:
    if kind == "sd2":
        return dict(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            block_out_channels=(16, 32, 32),
            layers_per_block=2,
            attention_head_dim=[2, 4, 4],
            cross_attention_dim=32,
            use_linear_projection=True,
            norm_num_groups=8,
        )
    return dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=(
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=1,
        attention_head_dim=2,
        cross_attention_dim=32,
        use_linear_projection=False,
        norm_num_groups=8,
    )


def build_unet(kind: str, seed: int):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_config(kind)).eval()
    perturb_(unet, seed + 1)
    return unet


def build_text_encoder(kind: str, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3 if kind == "sd2" else 2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="gelu" if kind == "sd2" else "quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=32,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=0 if kind == "sd2" else 49407,
    )
    te = CLIPTextModel(cfg).eval()
    perturb_(te, seed + 1)
    return te.to(torch.float16)


def build_vae(seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.18215,
    ).eval()
    perturb_(vae, seed + 1)
    return vae


def build_scheduler(kind: str):
    from diffusers import DDIMScheduler, PNDMScheduler

    common = dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        trained_betas=None,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    if kind == "sd2":
        return DDIMScheduler(**common, clip_sample=False, prediction_type="epsilon")
    return PNDMScheduler(**common, skip_prk_steps=True, prediction_type="epsilon")


def build_folder(kind: str, dst: pathlib.Path, seed: int):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=build_vae(seed + 20),
        text_encoder=build_text_encoder(kind, seed + 10),
        tokenizer=None,
        unet=build_unet(kind, seed),
        scheduler=build_scheduler(kind),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if dst.exists():
        shutil.rmtree(dst)
    pipe.save_pretrained(dst, safe_serialization=True)
    pad = "!" if kind == "sd2" else "<|endoftext|>"
    write_tokenizer(dst / "tokenizer", pad)
    idx = json.loads((dst / "model_index.json").read_text())
    idx["tokenizer"] = ["transformers", "CLIPTokenizer"]
    (dst / "model_index.json").write_text(json.dumps(idx, indent=2, sort_keys=True) + "\n")
    check_tokenizer(dst / "tokenizer", pad)
    # Round trip: the folder loads back into a pipeline.
    StableDiffusionPipeline.from_pretrained(dst, safety_checker=None)
    size = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
    print(f"  {dst.name}: {size / 1e6:.1f} MB")


def main(fixtures: pathlib.Path):
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    build_folder("sd2", fixtures / "tiny-sd2", seed=2000)
    build_folder("sd1", fixtures / "tiny-sd1", seed=1000)


if __name__ == "__main__":
    main(pathlib.Path(__file__).resolve().parent.parent / "fixtures")
